"""Azure OpenAI chat-completions payloads, shaped as the real service sends them.

See shared/reference/azure-openai-wire.md: every field here mirrors a captured Azure payload,
including the odd ones (the empty first stream event, `content_filter_results: {}` on the role
chunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

SEVERITY_CATEGORIES = ("hate", "self_harm", "sexual", "violence")
SYSTEM_FINGERPRINT = "fp_sim0000001"


def safe_prompt_results() -> JSON:
    results: JSON = {c: {"filtered": False, "severity": "safe"} for c in SEVERITY_CATEGORIES}
    results["jailbreak"] = {"filtered": False, "detected": False}
    return results


def safe_output_results() -> JSON:
    results: JSON = {c: {"filtered": False, "severity": "safe"} for c in SEVERITY_CATEGORIES}
    results["protected_material_code"] = {"filtered": False, "detected": False}
    results["protected_material_text"] = {"filtered": False, "detected": False}
    return results


def prompt_filter_results(results: JSON) -> list[JSON]:
    return [{"prompt_index": 0, "content_filter_results": results}]


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> JSON:
    """`completion_tokens`: the answer's text; a reasoning model's hidden tokens are billed on
    top, and said apart in `completion_tokens_details`."""
    billed = completion_tokens + reasoning_tokens
    body: JSON = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": billed,
        "total_tokens": prompt_tokens + billed,
    }
    if reasoning_tokens:
        body["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return body


def completion(
    *,
    completion_id: str,
    created: int,
    model: str,
    content: str | None,
    finish_reason: str,
    prompt_results: JSON,
    output_results: JSON,
    prompt_tokens: int,
    completion_tokens: int,
    reasoning_tokens: int = 0,
) -> JSON:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "prompt_filter_results": prompt_filter_results(prompt_results),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish_reason,
                "logprobs": None,
                "content_filter_results": output_results,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens, reasoning_tokens),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def first_stream_event(prompt_results: JSON) -> JSON:
    # Azure's first event is not a real chunk: empty id/object/model and no choices.
    return {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": prompt_filter_results(prompt_results),
    }


@dataclass(frozen=True)
class StreamIds:
    """What every real chunk of one stream repeats: id, created and model."""

    completion_id: str
    created: int
    model: str

    def chunk(self, choice: JSON) -> JSON:
        return {
            "choices": [choice],
            "created": self.created,
            "id": self.completion_id,
            "model": self.model,
            "object": "chat.completion.chunk",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def usage_chunk(
        self, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0
    ) -> JSON:
        body = self.chunk({})
        body["choices"] = []
        body["usage"] = usage(prompt_tokens, completion_tokens, reasoning_tokens)
        return body


def delta_choice(
    delta: JSON, *, finish_reason: str | None = None, results: JSON | None = None
) -> JSON:
    choice: JSON = {"delta": delta, "finish_reason": finish_reason, "index": 0, "logprobs": None}
    if results is not None:
        choice["content_filter_results"] = results
    return choice


def annotation_chunk(
    *,
    results: JSON,
    check_offset: int,
    start_offset: int,
    end_offset: int,
    finish_reason: str | None,
) -> JSON:
    """Asynchronous filter mode: annotation-only chunk, no `delta`, after the text it judges."""
    return {
        "choices": [
            {
                "content_filter_offsets": {
                    "check_offset": check_offset,
                    "start_offset": start_offset,
                    "end_offset": end_offset,
                },
                "content_filter_results": results,
                "finish_reason": finish_reason,
                "index": 0,
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }


# Error bodies, copied from the real service (shared/reference/azure-openai-wire.md).


def error_401() -> JSON:
    return {
        "error": {
            "code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint. "
            "Make sure to provide a valid key for an active subscription and use a correct "
            "regional API endpoint for your resource.",
        }
    }


def error_missing_api_version() -> JSON:
    return {
        "error": {
            "code": "MissingApiVersionParameter",
            "message": "The api-version query parameter (?api-version=) is required for all "
            "requests.",
        }
    }


def error_unsupported_parameter(param: str, instead: str) -> JSON:
    return {
        "error": {
            "message": f"Unsupported parameter: '{param}' is not supported with this model. "
            f"Use '{instead}' instead.",
            "type": "invalid_request_error",
            "param": param,
            "code": "unsupported_parameter",
        }
    }


def error_invalid_request(message: str, param: str | None = None) -> JSON:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    }


def error_429(*, api_version: str, retry_after_s: int) -> JSON:
    return {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
            f"version {api_version} have exceeded token rate limit of your current OpenAI S0 "
            f"pricing tier. Please retry after {retry_after_s} seconds. Please go here: "
            "https://aka.ms/oai/quotaincrease if you would like to further increase the default "
            "rate limit.",
        }
    }


def error_500() -> JSON:
    return {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def error_503() -> JSON:
    return {
        "error": {
            "code": "ServiceUnavailable",
            "message": "The service is temporarily unable to process your request. "
            "Please try again later.",
        }
    }


def error_404() -> JSON:
    return {
        "error": {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again.",
        }
    }


def error_408() -> JSON:
    return {"error": {"code": "Timeout", "message": "The operation was timeout."}}
