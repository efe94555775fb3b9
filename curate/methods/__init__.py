"""Model-free algorithms that stages use: selection, k-means, optimal transport, scaling laws, hashed n-gram
features, text primitives, MinHash dedup, CLEAR's and DART's arithmetic, answer checking, closed-loop statistics,
decontamination and the leak check."""
