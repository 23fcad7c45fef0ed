"""The promotion gate: better by the margin, or kept back with a reason."""
from pipeline.tracking.promotion import decide, markdown


def _champion(ppl, fill=0.5):
    return {"version": "3", "metrics": {"test_ppl": ppl, "fill_accuracy": fill}}


def test_first_model_is_promoted():
    assert decide({"test_ppl": 80.0}, None, 0.01) == (True, "no champion yet")


def test_causal_model_must_beat_the_champion_by_the_margin():
    assert decide({"test_ppl": 98.0, "objective": "causal"}, _champion(100.0), 0.01)[0]
    promoted, reason = decide({"test_ppl": 99.5, "objective": "causal"}, _champion(100.0), 0.01)
    assert not promoted and "needs < 99.000" in reason and "v3" in reason


def test_bidirectional_model_must_not_lose_fill_accuracy():
    new = {"test_ppl": 50.0, "fill_accuracy": 0.4, "objective": "cloze"}
    promoted, reason = decide(new, _champion(60.0, fill=0.45), 0.01)
    assert not promoted and "fill_accuracy 0.400 is below" in reason
    assert decide({**new, "fill_accuracy": 0.5}, _champion(60.0, fill=0.45), 0.01)[0]


def test_report_table():
    text = markdown({"gru": {"promoted": 0, "version": "4", "test_ppl": 99.5,
                             "champion_version": "3", "reason": "r"}})
    assert "| gru | 4 | kept back | 99.500 | v3 | r |" in text
