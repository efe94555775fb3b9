"""Reading input files: where they are (sources, specs), how each format is read into Arrow with a reason for every
bad record (readers, json_lines, formats, decompress), field mapping and chat turns, and ingest into the data
contract."""
