"""Final answers of GSM8K-style solutions and their comparison."""

from curate.methods.answers import final_answer, reference_answer, same_answer


def test_final_answer_prefers_the_marked_number():
    assert final_answer("She has 3 + 4 = 7 apples.\n#### 7") == "7"
    assert final_answer("2 then 5 #### 1,250 and 9") == "1,250"
    assert final_answer("The total is 42 dollars.") == "42"
    assert final_answer("no number here") is None
    assert final_answer(None) is None


def test_same_answer_compares_values():
    assert same_answer("1,000", "1000")
    assert same_answer("3.50", "3.5")
    assert same_answer("1/2", "0.5")
    assert not same_answer("7", "8")
    assert not same_answer(None, "8")


def test_reference_answer_comes_from_answer_or_the_marked_response():
    assert reference_answer({"answer": "18", "response": "... #### 19"}) == "18"
    assert reference_answer({"response": "Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18"}) == "18"
    assert reference_answer({"response": "no marked answer 12"}) is None
    assert reference_answer({"text": "plain"}) is None
