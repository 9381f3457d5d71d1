"""Content-filter mode: each trigger yields Azure's exact wire shape, seen through the SDK."""

import itertools
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from simulator.filters import DEFAULT_TRIGGERS_FILE, load_triggers

README = Path(__file__).resolve().parents[2] / "simulator" / "README.md"
API_VERSION = "2024-10-21"


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": f"Please help me with this. {text}"}]


async def prompt_error(client: openai.AsyncAzureOpenAI, trigger: str) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="chat", messages=ask(trigger))
    return caught.value


async def stream_chunks(client: openai.AsyncAzureOpenAI, trigger: str) -> list[Any]:
    stream = await client.chat.completions.create(
        model="chat", messages=ask(trigger), stream=True, stream_options={"include_usage": True}
    )
    return [chunk async for chunk in stream]


def extras(model: Any) -> dict[str, Any]:
    return dict(model.model_extra or {})


@pytest.mark.parametrize("category", ["hate", "sexual", "violence", "self_harm"])
async def test_prompt_with_category_trigger_returns_400_content_filter_with_innererror(
    azure_client: openai.AsyncAzureOpenAI, category: str
) -> None:
    error = await prompt_error(azure_client, f"[cf:{category}]")

    assert error.status_code == 400
    assert error.code == "content_filter"
    assert error.param == "prompt"
    assert error.response.reason_phrase == "model_error"
    assert isinstance(error.body, dict)
    assert error.body["message"].startswith(
        "The response was filtered due to the prompt triggering Azure OpenAI's content management"
    )
    assert error.body["type"] is None
    assert error.body["status"] == 400
    inner = error.body["innererror"]
    assert inner["code"] == "ResponsibleAIPolicyViolation"
    result = inner["content_filter_result"]
    assert result[category] == {"filtered": True, "severity": "high"}
    others = {"hate", "sexual", "violence", "self_harm"} - {category}
    assert all(result[other] == {"filtered": False, "severity": "safe"} for other in others)


async def test_prompt_with_violence_trigger_returns_400_content_filter_with_innererror(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    error = await prompt_error(azure_client, "[CF:Violence]")  # matched case-insensitively
    assert isinstance(error.body, dict)
    violence = error.body["innererror"]["content_filter_result"]["violence"]
    assert violence == {"filtered": True, "severity": "high"}


async def test_medium_severity_trigger_filters_prompt_with_medium(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    error = await prompt_error(azure_client, "[cf:hate:medium]")
    assert isinstance(error.body, dict)
    hate = error.body["innererror"]["content_filter_result"]["hate"]
    assert hate == {"filtered": True, "severity": "medium"}


async def test_jailbreak_trigger_is_detected_and_filtered(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    error = await prompt_error(azure_client, "[cf:jailbreak]")
    assert isinstance(error.body, dict)
    jailbreak = error.body["innererror"]["content_filter_result"]["jailbreak"]
    assert jailbreak == {"filtered": True, "detected": True}


async def test_blocklist_trigger_uses_current_details_shape(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    error = await prompt_error(azure_client, "[cf:blocklist]")
    assert isinstance(error.body, dict)
    blocklists = error.body["innererror"]["content_filter_result"]["custom_blocklists"]
    assert blocklists == {
        "filtered": True,
        "details": [{"filtered": True, "id": "CompanyBannedTerms"}],
    }


async def test_old_blocklist_trigger_uses_list_shape(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    error = await prompt_error(azure_client, "[cf:blocklist-old]")
    assert isinstance(error.body, dict)
    blocklists = error.body["innererror"]["content_filter_result"]["custom_blocklists"]
    assert blocklists == [{"filtered": True, "id": "CompanyBannedTerms"}]


async def test_legacy_trigger_returns_400_without_innererror(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    error = await prompt_error(azure_client, "[cf:legacy400]")
    assert error.code == "content_filter"
    assert isinstance(error.body, dict)
    assert "innererror" not in error.body


async def test_filtered_prompt_with_stream_fails_before_any_event(
    simulator_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{simulator_url}/openai/deployments/chat/chat/completions?api-version={API_VERSION}",
        headers={"api-key": "k"},
        json={"messages": ask("[cf:sexual]"), "stream": True},
    ) as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["error"]["code"] == "content_filter"


async def test_filtered_prompt_with_stream_raises_bad_request_in_sdk(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await azure_client.chat.completions.create(
            model="chat", messages=ask("[cf:self_harm]"), stream=True
        )
    assert caught.value.code == "content_filter"


@pytest.mark.parametrize("category", ["hate", "sexual", "violence", "self_harm"])
async def test_output_trigger_returns_200_with_null_content_and_content_filter_finish(
    azure_client: openai.AsyncAzureOpenAI, category: str
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask(f"[cf:output:{category}]")
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content is None
    assert extras(choice)["content_filter_results"][category] == {
        "filtered": True,
        "severity": "high",
    }
    prompt_results = extras(completion)["prompt_filter_results"][0]["content_filter_results"]
    assert prompt_results[category] == {"filtered": False, "severity": "safe"}
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0


async def test_stream_cut_trigger_sends_text_then_content_filter_finish(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    chunks = await stream_chunks(azure_client, "[cf:stream-cut:violence]")

    content = [c for c in chunks if c.choices and c.choices[0].delta and c.choices[0].delta.content]
    assert content, "some text is streamed before the cut"
    for chunk in content:
        assert extras(chunk.choices[0])["content_filter_results"]["violence"]["filtered"] is False
    final = chunks[-2].choices[0]
    assert final.finish_reason == "content_filter"
    assert final.delta.content is None
    assert extras(final)["content_filter_results"]["violence"] == {
        "filtered": True,
        "severity": "medium",
    }
    usage = chunks[-1].usage
    assert usage is not None
    streamed = "".join(c.choices[0].delta.content for c in content)
    full = await azure_client.chat.completions.create(model="chat", messages=ask("plain"))
    assert len(streamed) < len(full.choices[0].message.content or "")


def judged_only_what_was_sent(chunks: list[Any]) -> bool:
    """Whether every annotation judges text that was streamed before it, and no more."""
    sent = 0
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta is not None:
            sent += len(choice.delta.content or "")
        elif extras(choice)["content_filter_offsets"]["end_offset"] > sent:
            return False
    return True


async def test_async_cut_trigger_streams_text_judged_one_group_behind_ending_in_content_filter(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    chunks = await stream_chunks(azure_client, "[cf:async-cut:hate]")

    real = [c for c in chunks if c.choices and c.choices[0].delta is not None]
    annotations = [c for c in chunks if c.choices and c.choices[0].delta is None]
    assert annotations
    last_text_index = max(i for i, c in enumerate(chunks) if c in real)
    # The filter judges the text while it streams, one group of chunks behind; the verdict
    # comes after the last text, and the stream stops there.
    assert chunks.index(annotations[0]) < last_text_index < chunks.index(annotations[-1])
    assert judged_only_what_was_sent(chunks)
    assert all(c.choices[0].finish_reason is None for c in real)  # no stop chunk
    for annotation in annotations:
        assert (annotation.id, annotation.object, annotation.created) == ("", "", 0)
        offsets = extras(annotation.choices[0])["content_filter_offsets"]
        assert set(offsets) == {"check_offset", "start_offset", "end_offset"}
    last = annotations[-1].choices[0]
    assert last.finish_reason == "content_filter"
    assert extras(last)["content_filter_results"]["hate"] == {"filtered": True, "severity": "high"}
    assert all(
        extras(a.choices[0])["content_filter_results"]["hate"]["filtered"] is False
        for a in annotations[:-1]
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in real)
    assert extras(last)["content_filter_offsets"]["end_offset"] == len(streamed)


async def test_async_pass_trigger_streams_annotations_that_all_pass(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    chunks = await stream_chunks(azure_client, "[cf:async-pass]")

    annotations = [c for c in chunks if c.choices and c.choices[0].delta is None]
    assert len(annotations) >= 2
    stop = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(stop) == 1
    # Judged while streaming, and the last of the text after the finish chunk.
    assert chunks.index(annotations[0]) < chunks.index(stop[0]) < chunks.index(annotations[-1])
    assert judged_only_what_was_sent(chunks)
    for annotation in annotations:
        results = extras(annotation.choices[0])["content_filter_results"]
        assert not any(value.get("filtered") for value in results.values())
        assert annotation.choices[0].finish_reason is None
    content = [c for c in chunks if c.choices and c.choices[0].delta and c.choices[0].delta.content]
    assert all("content_filter_results" not in extras(c.choices[0]) for c in content)
    assert chunks[-1].usage is not None
    # The role chunk carries empty results, as in the default mode.
    [role] = [c for c in chunks if c.choices and c.choices[0].delta and c.choices[0].delta.role]
    assert extras(role.choices[0])["content_filter_results"] == {}


async def test_async_pass_annotation_offsets_cover_the_text(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    chunks = await stream_chunks(azure_client, "[cf:async-pass]")

    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
    )
    offsets = [
        extras(c.choices[0])["content_filter_offsets"]
        for c in chunks
        if c.choices and c.choices[0].delta is None
    ]
    assert offsets[0]["start_offset"] == 0
    assert offsets[-1]["end_offset"] == len(text)
    for earlier, later in itertools.pairwise(offsets):
        assert earlier["end_offset"] == later["start_offset"]


async def test_jailbreak_annotate_trigger_reports_detected_without_filtering(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:jailbreak-annotate]")
    )
    assert completion.choices[0].finish_reason == "stop"
    results = extras(completion)["prompt_filter_results"][0]["content_filter_results"]
    assert results["jailbreak"] == {"filtered": False, "detected": True}


async def test_indirect_trigger_reports_indirect_attack_on_prompt(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:indirect]")
    )
    results = extras(completion)["prompt_filter_results"][0]["content_filter_results"]
    assert results["indirect_attack"] == {"filtered": False, "detected": True}


async def test_protected_text_trigger_annotates_output(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:protected-text]")
    )
    choice = completion.choices[0]
    assert choice.message.content
    assert extras(choice)["content_filter_results"]["protected_material_text"] == {
        "filtered": False,
        "detected": True,
    }


async def test_protected_code_trigger_annotates_output_with_upper_case_url_citation(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:protected-code]")
    )
    code = extras(completion.choices[0])["content_filter_results"]["protected_material_code"]
    assert code["filtered"] is False
    assert code["detected"] is True
    assert code["citation"]["URL"].startswith("https://github.com/")
    assert code["citation"]["license"] == "MIT"

    chunks = await stream_chunks(azure_client, "[cf:protected-code]")
    content = [c for c in chunks if c.choices and c.choices[0].delta and c.choices[0].delta.content]
    streamed = extras(content[-1].choices[0])["content_filter_results"]["protected_material_code"]
    assert streamed == code


async def test_protected_text_output_trigger_filters_output(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:output:protected-text]")
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "content_filter"
    assert extras(choice)["content_filter_results"]["protected_material_text"] == {
        "filtered": True,
        "detected": True,
    }


@pytest.mark.parametrize(
    ("trigger", "side", "category", "severity"),
    [
        ("[cf:low:violence]", "prompt", "violence", "low"),
        ("[cf:low:hate]", "prompt", "hate", "low"),
        ("[cf:output-low:violence]", "output", "violence", "low"),
        ("[cf:medium-pass:violence]", "prompt", "violence", "medium"),
        ("[cf:output-medium-pass:sexual]", "output", "sexual", "medium"),
    ],
)
async def test_low_and_allowed_medium_severities_are_reported_not_filtered(
    azure_client: openai.AsyncAzureOpenAI, trigger: str, side: str, category: str, severity: str
) -> None:
    completion = await azure_client.chat.completions.create(model="chat", messages=ask(trigger))
    assert completion.choices[0].finish_reason == "stop"
    if side == "prompt":
        results = extras(completion)["prompt_filter_results"][0]["content_filter_results"]
    else:
        results = extras(completion.choices[0])["content_filter_results"]
    assert results[category] == {"filtered": False, "severity": severity}


async def test_blocklist_annotate_trigger_reports_hit_without_filtering(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:blocklist-annotate]")
    )
    results = extras(completion)["prompt_filter_results"][0]["content_filter_results"]
    assert results["custom_blocklists"] == {
        "filtered": False,
        "details": [{"filtered": False, "id": "CompanyWatchList"}],
    }


async def test_filter_error_trigger_reports_integer_code_on_prompt(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:filter-error]")
    )
    assert completion.choices[0].message.content
    results = extras(completion)["prompt_filter_results"][0]["content_filter_results"]
    assert results == {"error": {"code": 499, "message": "The contents are not filtered"}}


async def test_output_filter_error_trigger_reports_string_code_on_output(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:output-filter-error]")
    )
    results = extras(completion.choices[0])["content_filter_results"]
    assert results == {"error": {"code": "499", "message": "The contents are not filtered"}}


async def test_triggers_combine_in_one_message(azure_client: openai.AsyncAzureOpenAI) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:indirect] [cf:protected-text]")
    )
    prompt = extras(completion)["prompt_filter_results"][0]["content_filter_results"]
    output = extras(completion.choices[0])["content_filter_results"]
    assert prompt["indirect_attack"]["detected"] is True
    assert output["protected_material_text"]["detected"] is True


async def test_only_the_last_user_message_is_checked(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    messages = [
        {"role": "user", "content": "[cf:violence]"},
        {"role": "assistant", "content": "..."},
        {"role": "user", "content": "A harmless follow-up."},
    ]
    completion = await azure_client.chat.completions.create(model="chat", messages=messages)  # type: ignore[arg-type]
    assert completion.choices[0].finish_reason == "stop"


async def test_trigger_phrase_is_not_echoed_in_reply(azure_client: openai.AsyncAzureOpenAI) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=ask("[cf:indirect]")
    )
    assert "[cf:" not in (completion.choices[0].message.content or "")


def test_every_trigger_is_documented_in_readme() -> None:
    documented = README.read_text(encoding="utf-8")
    missing = [t.phrase for t in load_triggers() if f"`{t.phrase}`" not in documented]
    assert missing == []


def test_trigger_table_rejects_inconsistent_rows(tmp_path: Path) -> None:
    bad = tmp_path / "triggers.yaml"
    bad.write_text(
        "triggers:\n"
        '  - {phrase: "[x]", outcome: prompt_filtered, side: output, category: hate, '
        "severity: high}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="prompt_filtered needs side prompt"):
        load_triggers(bad)


def test_custom_trigger_file_replaces_the_default(tmp_path: Path) -> None:
    custom = tmp_path / "triggers.yaml"
    custom.write_text(
        "triggers:\n"
        '  - {phrase: "forbidden words", outcome: prompt_filtered, side: prompt, '
        "category: hate, severity: high}\n",
        encoding="utf-8",
    )
    assert [t.phrase for t in load_triggers(custom)] == ["forbidden words"]
    assert len(load_triggers()) > 30
    assert DEFAULT_TRIGGERS_FILE.exists()


async def test_raw_async_annotation_chunk_has_no_delta_key(
    simulator_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{simulator_url}/openai/deployments/chat/chat/completions?api-version={API_VERSION}",
        headers={"api-key": "k"},
        json={"messages": ask("[cf:async-cut:sexual]"), "stream": True},
    ) as response:
        body = (await response.read()).decode()
    events = re.findall(r"^data: (.*)$", body, flags=re.MULTILINE)
    annotations = [
        json.loads(e) for e in events if e != "[DONE]" and '"content_filter_offsets"' in e
    ]
    assert annotations
    assert all("delta" not in a["choices"][0] for a in annotations)
    assert events[-1] == "[DONE]"
