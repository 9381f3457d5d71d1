"""Token counting with the shipped tokenizer data, and the history window's budget rules."""

from __future__ import annotations

import pytest

from chat.tokens import TokenCounter, model_family
from chat.window import MessageTooLong, build_window
from storage.models import Message, MessageStatus, Role

counter = TokenCounter("gpt-4o")


def test_gpt4o_counts_with_o200k_base_offline() -> None:
    assert counter.family.encoding == "o200k_base"
    # Known o200k_base encoding of "Hello, world!": [13225, 11, 2375, 0]
    assert counter.count_text("Hello, world!") == 4


def test_gpt4_family_uses_cl100k_base() -> None:
    gpt4 = TokenCounter("gpt-4")
    assert gpt4.family.encoding == "cl100k_base"
    assert gpt4.count_text("Hello, world!") == 4
    assert TokenCounter("gpt-35-turbo").family.encoding == "cl100k_base"


def test_longest_family_prefix_wins_and_unknown_models_get_the_default() -> None:
    assert model_family("gpt-4o-mini-2024-07-18").name == "gpt-4o-mini"
    assert model_family("gpt-4o-2024-11-20").name == "gpt-4o"
    assert model_family("Phi-4").name == "default"


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "gpt-4.5-preview", "gpt-5-chat", "o3-mini"])
def test_the_newer_gpt_4_numbers_count_with_o200k_base_as_the_simulator_does(model: str) -> None:
    assert model_family(model).encoding == "o200k_base"


def test_special_token_text_is_counted_not_rejected() -> None:
    assert counter.count_text("<|endoftext|>") > 1


def test_chat_format_overhead_matches_openai_rule() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    content = sum(counter.count_text(v) for m in messages for v in m.values())
    assert counter.count_messages(messages) == content + 3 * 2 + 3


@pytest.mark.parametrize(
    ("size", "detail", "expected"),
    [((2048, 4096), "high", 1105), ((1024, 1024), "high", 765), ((4096, 8192), "low", 85)],
)
def test_image_tokens_follow_azure_examples(
    size: tuple[int, int], detail: str, expected: int
) -> None:
    assert counter.image_tokens(*size, detail=detail) == expected


def _history(texts: list[str], **overrides: object) -> list[Message]:
    messages = []
    for n, text in enumerate(texts):
        role = Role.USER if n % 2 == 0 else Role.ASSISTANT
        messages.append(
            Message(
                id=f"m{n}",
                conversation_id="c",
                seq=n,
                role=role,
                text=text,
                tokens=counter.count_text(text),
                **overrides,  # type: ignore[arg-type]
            )
        )
    return messages


SYSTEM = "You are a helpful assistant."
SYSTEM_TOKENS = counter.count_text(SYSTEM)


def test_window_keeps_everything_when_it_fits() -> None:
    history = _history(["one", "two", "three"])
    window = build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=1000)
    assert window.messages[0] == {"role": "system", "content": SYSTEM}
    assert [m["content"] for m in window.messages[1:]] == ["one", "two", "three"]
    assert window.prompt_tokens == counter.count_messages(window.messages)
    assert window.dropped == 0


def test_window_never_exceeds_budget_and_keeps_newest_and_system_prompt() -> None:
    history = _history([f"message number {n} " * 10 for n in range(41)])
    for budget in (80, 150, 300, 600, 1200):
        window = build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=budget)
        assert counter.count_messages(window.messages) <= budget
        assert window.messages[0]["role"] == "system"
        kept = [m["content"] for m in window.messages[1:]]
        assert kept == [m.text for m in history[len(history) - len(kept) :]], "newest, in order"
        assert kept[-1] == history[-1].text, "the current prompt is always kept"
        assert window.dropped == len(history) - len(kept)


def test_window_stops_at_a_context_reset() -> None:
    history = _history(["old question", "old answer"])
    history.append(Message(id="r", conversation_id="c", seq=2, role=Role.CONTEXT_RESET))
    history += _history(["new question"])
    history[-1] = history[-1].model_copy(update={"seq": 3, "id": "m3"})
    window = build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=1000)
    assert [m["content"] for m in window.messages[1:]] == ["new question"]


def test_an_answer_stored_after_a_reset_to_a_prompt_before_it_is_left_out() -> None:
    """/new on one instance while a turn of the conversation runs on another: that turn's
    answer is stored after the reset marker. It answers a question from before the reset, which
    the window no longer holds: without it, the answer would be context without its question."""
    old_question = Message(
        id="q-old", conversation_id="c", seq=1, role=Role.USER, text="old question", tokens=2
    )
    reset = Message(id="r", conversation_id="c", seq=2, role=Role.CONTEXT_RESET)
    late_answer = Message(
        id="a-old",
        conversation_id="c",
        seq=3,
        role=Role.ASSISTANT,
        text="late answer to the old question",
        tokens=6,
        reply_to_id="q-old",
    )
    fresh = _history(["fresh question", "fresh answer", "next question"])
    fresh = [
        m.model_copy(update={"seq": 4 + n, "id": f"f{n}", "reply_to_id": "f0" if n == 1 else None})
        for n, m in enumerate(fresh)
    ]
    history = [old_question, reset, late_answer, *fresh]

    window = build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=1000)

    assert [m["content"] for m in window.messages[1:]] == [
        "fresh question",
        "fresh answer",
        "next question",
    ]
    expected = build_window(SYSTEM, SYSTEM_TOKENS, fresh, counter, budget=1000)
    assert window.prompt_tokens == expected.prompt_tokens
    assert window.dropped == 2  # the old question and the late answer


def test_window_leaves_out_filtered_and_failed_messages() -> None:
    history = _history(["bad prompt", "", "good prompt"])
    history[0] = history[0].model_copy(update={"status": MessageStatus.FILTERED})
    history[1] = history[1].model_copy(update={"status": MessageStatus.ERROR})
    window = build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=1000)
    assert [m["content"] for m in window.messages[1:]] == ["good prompt"]


def test_a_prompt_the_model_could_not_answer_stays_context_for_the_next_one() -> None:
    """Its error record is left out, the prompt is not: "try again" then means something."""
    history = _history(["What is our travel policy?", "", "try again"])
    history[1] = history[1].model_copy(
        update={"status": MessageStatus.ERROR, "error": "model_unavailable"}
    )
    window = build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=1000)
    assert [m["content"] for m in window.messages[1:]] == [
        "What is our travel policy?",
        "try again",
    ]


def test_the_prompt_of_a_blocked_answer_stays_out_when_the_turn_then_failed() -> None:
    """The filter had blocked the answer when the turn was cut short (the shutdown, the turn's
    deadline): the error record carries that verdict, and its prompt would be blocked again."""
    history = _history(["Tell me a violent story", "", "something else"])
    history[1] = history[1].model_copy(
        update={
            "status": MessageStatus.ERROR,
            "error": "shutdown_interrupted",
            "reply_to_id": "m0",
            "filter": {"filtered": True, "results": [{"category": "violence", "filtered": True}]},
        }
    )
    window = build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=1000)
    assert [m["content"] for m in window.messages[1:]] == ["something else"]


def test_current_prompt_that_cannot_fit_is_refused() -> None:
    history = _history(["word " * 500])
    with pytest.raises(MessageTooLong):
        build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=100)


def test_an_older_message_that_fits_no_window_is_left_out_not_the_end_of_the_window() -> None:
    """A prompt refused as too long, stored before such prompts were marked not sent, would
    otherwise end every later window and hide everything said before it."""
    history = _history(["first question", "first answer", "word " * 500, "", "and now?"])
    window = build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=200)
    assert [m["content"] for m in window.messages[1:]] == [
        "first question",
        "first answer",
        "and now?",
    ]
    assert window.dropped == 1


def test_an_older_message_that_would_fit_alone_still_ends_a_full_window() -> None:
    """The window stays the newest messages in a row: one that fits a window beside the current
    prompt but not what is chosen already ends it, as before."""
    history = _history(["first question", "first answer", "word " * 60, "its answer", "now?"])
    window = build_window(SYSTEM, SYSTEM_TOKENS, history, counter, budget=84)
    assert [m["content"] for m in window.messages[1:]] == ["its answer", "now?"]
