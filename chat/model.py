"""Calls to an Azure OpenAI (or compatible) chat-completions deployment through the openai SDK.

The SDK's own retries are off: retry and spill-over policy belongs to the caller (the router),
which needs to see every 429 and its retry-after to decide where the next attempt goes.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import aiohttp
import openai
from openai import AsyncAzureOpenAI, AsyncOpenAI, AsyncStream, RequestOptions
from openai.types.chat import ChatCompletionMessageParam

from chat.filters import (
    Verdict,
    is_prompt_filter_error,
    parse_answer,
    parse_prompt_annotations,
    stream_judgement,
)
from chat.tokens import model_family

ApiStyle = Literal["azure", "v1", "openai-compatible"]
TokenProvider = Callable[[], Awaitable[str]]
TextListener = Callable[[str], Awaitable[None]]
_T = TypeVar("_T")
_D = TypeVar("_D")
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


@dataclass(frozen=True)
class Deployment:
    name: str
    endpoint: str
    deployment: str
    model: str = "gpt-4o"
    api: ApiStyle = "azure"
    api_version: str = "2024-10-21"
    type: str = "Standard"
    priority: int = 1
    api_key: str | None = field(default=None, repr=False)


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    deployment: str
    latency_ms: int
    # Raw content-filter annotations as Azure sent them; chat.filters turns them into verdicts.
    # Output entries are {"content_filter_results": {...}, "content_filter_offsets": {...}?}.
    prompt_filter_results: list[dict[str, Any]] = field(default_factory=list)
    output_annotations: list[dict[str, Any]] = field(default_factory=list)
    usage_reported: bool = True
    # Of `completion_tokens`, those a reasoning model spent on its hidden reasoning: billed, but
    # not in the text (a window counts the text).
    reasoning_tokens: int = 0


@dataclass
class FilterWatch:
    """A streamed answer's standing with the content filter, shared by a turn and its model call.

    Set by the turn: `withhold_on_error` (FILTER_ERROR_POLICY=withhold): once the filter reports
    an error (it judged nothing), no more text is shown, as after a block, so no unjudged text
    reaches the user. Kept up by the call as the stream goes: `annotated`, whether the
    deployment's filter reports on this stream at all, and `judged_chars`, how much of the
    answer (in characters) it has reported on. The default filter judges each chunk before it is
    sent; the asynchronous one sends its verdicts after the text they judge, so a stream cut
    short (a deadline, the user's Stop) may end with text on screen that no verdict covers.
    """

    withhold_on_error: bool = False
    annotated: bool = False
    judged_chars: int = 0
    # What the filter has said of the stream so far, as Azure sent it (the raw annotations a
    # Completion carries), from `deployment`; `filtered`: a verdict blocked the answer. A stream
    # that ends without a completion (cut short, stopped, failed) keeps its verdicts here.
    prompt_filter_results: list[dict[str, Any]] = field(default_factory=list)
    output_annotations: list[dict[str, Any]] = field(default_factory=list)
    filtered: bool = False
    deployment: str = ""

    def verdict(self) -> Verdict:
        """What the filter has said of the stream so far, as one verdict (as for a whole answer
        whose finish reason is content_filter when a verdict blocked it)."""
        return parse_answer(
            self.prompt_filter_results,
            self.output_annotations,
            "content_filter" if self.filtered else None,
        )

    def cleared(self, text: str) -> str:
        """Of `text` (a beginning of the answer), what the filter has judged, unless a verdict
        blocked the answer: what may stay on screen once the stream is stopped."""
        if self.filtered:
            return ""
        return text if not self.annotated else text[: self.judged_chars]

    def judged(self, text: str) -> bool:
        """Whether the filter has reported on all of `text` (a beginning of the answer). A
        deployment whose filter reports nothing (an OpenAI-compatible server) holds nothing back."""
        return not self.annotated or self.judged_chars >= len(text)


class ModelError(Exception):
    """A model call failed. `retryable` errors may succeed on another deployment or later.
    `fault` errors are the deployment's own (they count towards its circuit breaker), which
    includes a stream that broke off after text was shown: a fault, but not retried, as the
    user already saw part of one answer. Defaults to `retryable`."""

    def __init__(
        self,
        kind: str,
        *,
        deployment: str,
        status: int | None = None,
        retryable: bool = False,
        fault: bool | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
        partial_text: str = "",
    ) -> None:
        super().__init__(f"model call to {deployment} failed: {kind} (status {status})")
        self.kind = kind
        self.deployment = deployment
        self.status = status
        self.retryable = retryable
        self.fault = retryable if fault is None else fault
        self.retry_after = retry_after
        self.body = body or {}
        self.partial_text = partial_text


class PromptFiltered(ModelError):
    """Azure refused the prompt (HTTP 400 `content_filter`): not retryable anywhere."""

    def __init__(self, *, deployment: str, body: dict[str, Any]) -> None:
        super().__init__("prompt_filtered", deployment=deployment, status=400, body=body)


_TENANT_ID = re.compile(r"[0-9A-Za-z.-]{1,64}")


@dataclass(frozen=True)
class ModelCaller:
    """Whom a model request is for, sent as the headers API Management's per-user and per-tenant
    token limits and metrics key on (infra/apim/openai-policy.xml); Azure OpenAI ignores them.
    The user is a pseudonymous reference, never the user id."""

    user_ref: str
    tenant_id: str = ""

    def headers(self) -> dict[str, str]:
        headers = {"x-chat-user-ref": self.user_ref}
        # A tenant id comes from the channel: only a plain one goes into a header.
        if _TENANT_ID.fullmatch(self.tenant_id):
            headers["x-chat-tenant"] = self.tenant_id
        return headers


class ChatModel(Protocol):
    async def complete(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        on_text: TextListener | None = None,
        caller: ModelCaller | None = None,
        watch: FilterWatch | None = None,
    ) -> Completion: ...

    async def close(self) -> None: ...


def _retry_after(headers: Any) -> float | None:
    """Azure sends `retry-after-ms` (preferred, finer) and/or `retry-after` in seconds."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds):  # `inf` or `nan` names no time to wait
            return max(0.0, seconds)
    return None


# Azure's throttling messages: "... Please retry after 7 seconds. ..." and the short form
# "Rate limit is exceeded. Try again in 2 seconds."
_WAIT_IN_MESSAGE = re.compile(r"(?:retry after|try again in) (\d{1,9}) seconds?", re.IGNORECASE)


def _retry_after_in_message(body: dict[str, Any]) -> float | None:
    """The wait a throttling error names in its message, for a response without the headers (a
    gateway in between may drop them)."""
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    message = error.get("message") if isinstance(error, dict) else None
    found = _WAIT_IN_MESSAGE.search(message) if isinstance(message, str) else None
    return float(found.group(1)) if found else None


# Worth another deployment: throttling and server faults, and a deployment that refuses our
# credentials or does not exist (401, 403, 404): its configuration is broken, not the request.
_RETRYABLE_STATUS = {401, 403, 404, 408, 409, 429, 500, 502, 503, 504}

# Posted through the client's public `post`, not `chat.completions.create`: create() runs every
# message through the SDK's TypedDict transform (a recursive pass per union member, about 0.5 ms
# per message: 20 ms of CPU for a 40-message window, measured with bench/). Our messages are
# already wire-format dicts of strings; the URL (Azure deployment path), auth headers, timeout
# and error types are the same as create()'s.
_CHAT_PATH = "/chat/completions"
_CHAT_OPTIONS: RequestOptions = {"security": {"bearer_auth": True}}


def _connection_dropped(error: BaseException) -> bool:
    """Whether aiohttp's own error under `error` says the connection was lost rather than that
    time ran out."""
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectionError):
            return not isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError)
        cause = cause.__cause__
    return False


class TokenUnavailable(Exception):
    """The Entra ID token provider failed (the credential's own error is its cause)."""


def _reported_as_token_failure(provider: TokenProvider) -> TokenProvider:
    async def token() -> str:
        try:
            return await provider()
        except Exception as exc:
            raise TokenUnavailable(type(exc).__name__) from exc

    return token


class DeploymentClient:
    """One deployment, one SDK client (and its connection pool), reused for every call."""

    def __init__(
        self,
        deployment: Deployment,
        token_provider: TokenProvider | None,
        timeout_seconds: float,
    ) -> None:
        self.deployment = deployment
        if token_provider is not None:
            token_provider = _reported_as_token_failure(token_provider)
        # The field that caps the answer: reasoning models take only `max_completion_tokens`.
        self._output_limit = model_family(deployment.model).output_limit
        # Streams ask for the usage (include_usage). Azure and the v1 API then always end with a
        # usage chunk; an OpenAI-compatible server may ignore the option.
        self._usage_promised = deployment.api in ("azure", "v1")
        # The SDK's aiohttp transport instead of its default httpx one: same requests, errors and
        # timeouts, about a millisecond less CPU per call (httpcore's pool checks every pooled
        # connection through anyio on each request; aiohttp's C parser reads the response).
        http_client = openai.DefaultAioHttpClient(timeout=timeout_seconds)
        self._client: AsyncOpenAI
        if deployment.api == "azure":
            self._client = AsyncAzureOpenAI(
                azure_endpoint=deployment.endpoint,
                api_version=deployment.api_version,
                api_key=deployment.api_key,
                azure_ad_token_provider=None if deployment.api_key else token_provider,
                max_retries=0,
                timeout=timeout_seconds,
                http_client=http_client,
            )
        else:
            base_url = (
                f"{deployment.endpoint.rstrip('/')}/openai/v1/"
                if deployment.api == "v1"
                else deployment.endpoint
            )
            api_key: str | TokenProvider | None = deployment.api_key or token_provider
            if api_key is None:
                raise ValueError(f"deployment {deployment.name} has neither a key nor Entra ID")
            self._client = AsyncOpenAI(
                base_url=base_url,
                api_key=api_key,
                max_retries=0,
                timeout=timeout_seconds,
                http_client=http_client,
            )

    async def close(self) -> None:
        await self._client.close()

    async def complete(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        on_text: TextListener | None = None,
        caller: ModelCaller | None = None,
        watch: FilterWatch | None = None,
    ) -> Completion:
        started = time.monotonic()
        payload: list[ChatCompletionMessageParam] = messages  # type: ignore[assignment]
        options: RequestOptions = (
            {**_CHAT_OPTIONS, "headers": caller.headers()} if caller else _CHAT_OPTIONS
        )
        text = ""
        try:
            if on_text is None:
                return await self._complete_once(payload, max_tokens, started, options)
            return await self._complete_streaming(
                payload, max_tokens, started, on_text, options, watch or FilterWatch()
            )
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            if exc.status_code == 400 and is_prompt_filter_error(body):
                raise PromptFiltered(deployment=self.deployment.name, body=body) from exc
            retry_after = _retry_after(exc.response.headers)
            if retry_after is None and exc.status_code in (429, 503):
                retry_after = _retry_after_in_message(body)
            raise ModelError(
                "status",
                deployment=self.deployment.name,
                status=exc.status_code,
                retryable=exc.status_code in _RETRYABLE_STATUS,
                retry_after=retry_after,
                body=body,
            ) from exc
        except openai.APITimeoutError as exc:
            # The SDK's aiohttp transport reports a dropped connection (the server closed it,
            # a reset) as a connect timeout: told apart by its cause, for the logs and metrics.
            kind = "connection" if _connection_dropped(exc) else "timeout"
            raise ModelError(
                kind, deployment=self.deployment.name, retryable=True, partial_text=text
            ) from exc
        except openai.APIConnectionError as exc:
            raise ModelError(
                "connection", deployment=self.deployment.name, retryable=True, partial_text=text
            ) from exc
        except openai.APIError as exc:
            # An error event inside a stream, or a response the SDK could not parse.
            body = exc.body if isinstance(exc.body, dict) else {}
            raise ModelError(
                "stream_error", deployment=self.deployment.name, retryable=True, body=body
            ) from exc
        except TokenUnavailable as exc:
            # Entra ID gave no token (azure-identity's error, raised by the SDK outside its own
            # wrapping): a deployment with a key of its own may still answer.
            raise ModelError("auth", deployment=self.deployment.name, retryable=True) from exc
        except ValueError as exc:
            # A truncated or broken JSON body: the SDK's json.loads error escapes unwrapped.
            raise ModelError("malformed", deployment=self.deployment.name, retryable=True) from exc

    def _body(self, messages: list[ChatCompletionMessageParam], max_tokens: int) -> dict[str, Any]:
        # `model` is the deployment: the Azure client maps it into the deployment's URL path.
        return {
            "model": self.deployment.deployment,
            "messages": messages,
            self._output_limit: max_tokens,
        }

    async def _complete_once(
        self,
        messages: list[ChatCompletionMessageParam],
        max_tokens: int,
        started: float,
        options: RequestOptions,
    ) -> Completion:
        # The body comes back as bytes and is read here, not built into the SDK's ChatCompletion:
        # that model construction cost about 0.15-0.2 ms of CPU per call (measured against the
        # same requests cast to ChatCompletion), and Azure's filter fields are extras to it anyway.
        # Status errors, auth and timeouts are still the SDK's.
        content = await self._client.post(
            _CHAT_PATH,
            cast_to=bytes,
            body=self._body(messages, max_tokens),
            options=options,
        )
        answer = read_chat_completion(content)
        return Completion(
            text=answer.text,
            finish_reason=answer.finish_reason,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            deployment=self.deployment.name,
            latency_ms=int((time.monotonic() - started) * 1000),
            prompt_filter_results=answer.prompt_filter_results,
            output_annotations=answer.output_annotations,
            usage_reported=answer.usage_reported,
            reasoning_tokens=answer.reasoning_tokens,
        )

    async def _complete_streaming(
        self,
        messages: list[ChatCompletionMessageParam],
        max_tokens: int,
        started: float,
        on_text: TextListener,
        options: RequestOptions,
        watch: FilterWatch,
    ) -> Completion:
        # Each event comes as the SDK parsed its JSON, not built into a ChatCompletionChunk:
        # that construction was most of the SDK's CPU on a streamed turn (about a hundred events
        # each), and Azure's filter fields are extras to it anyway. Error events, status errors,
        # auth and timeouts are still the SDK's.
        stream = await self._client.post(
            _CHAT_PATH,
            cast_to=object,
            body={
                **self._body(messages, max_tokens),
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            options=options,
            stream=True,
            stream_cls=AsyncStream[object],
        )
        parts: list[str] = []
        finish_reason: str | None = None
        # Kept on the watch as they arrive: the turn reads them if the stream ends without a
        # completion. A stream on another deployment (a spill-over) starts afresh.
        prompt_filters: list[dict[str, Any]] = []
        output_annotations: list[dict[str, Any]] = []
        watch.prompt_filter_results, watch.output_annotations = prompt_filters, output_annotations
        watch.deployment, watch.filtered = self.deployment.name, False
        prompt_tokens = completion_tokens = reasoning_tokens = 0
        usage_reported = False
        watch.annotated, watch.judged_chars = False, 0
        length = 0
        # The filter's verdict is against the answer (a blocked category, or the finish reason
        # content_filter).
        filtered = False
        # Once the answer is blocked (or, withheld on a filter error, unjudged), nothing more of
        # it is shown: the turn replaces what was shown with its notice when the stream ends
        # (with the asynchronous filter the verdict comes after the text it judged, so some of
        # it was already on screen).
        blocked = False
        # FILTER_ERROR_POLICY=withhold and the filter failed: no more of the answer would be
        # shown, so the stream is closed at once (Azure stops generating, and billing, when the
        # client goes) and the turn gives its notice now, not after the whole answer.
        withheld = False
        try:
            async for event in stream:
                chunk = _typed(event, dict, {})
                found = _prompt_filters(chunk)
                if found:
                    prompt_filters += found
                    watch.annotated = True
                    # A prompt the filter could not judge is known from the first event, before
                    # any text.
                    if watch.withhold_on_error and parse_prompt_annotations(found).errors:
                        blocked = True
                usage = _typed(chunk.get("usage"), dict, None)
                if usage is not None:
                    prompt_tokens = _typed(usage.get("prompt_tokens"), int, 0)
                    completion_tokens = _typed(usage.get("completion_tokens"), int, 0)
                    reasoning_tokens = _reasoning_tokens(usage)
                    usage_reported = True
                for item in _typed(chunk.get("choices"), list, []):
                    choice = _typed(item, dict, {})
                    results = choice.get("content_filter_results")
                    offsets = choice.get("content_filter_offsets")
                    delta = _typed(choice.get("delta"), dict, {})
                    content = _typed(delta.get("content"), str, None)
                    if isinstance(results, dict) and results:
                        annotation: dict[str, Any] = {"content_filter_results": results}
                        if isinstance(offsets, dict):
                            annotation["content_filter_offsets"] = offsets
                        output_annotations.append(annotation)
                        # What blocks is read here; the whole verdict is made once, at the end.
                        blocks, failed = stream_judgement(results)
                        filtered = filtered or blocks
                        blocked = blocked or (watch.withhold_on_error and failed)
                        watch.annotated = True
                        if isinstance(offsets, dict):
                            watch.judged_chars = max(watch.judged_chars, _end_offset(offsets))
                        elif content:
                            # The default filter's results on a text chunk judge that chunk.
                            watch.judged_chars = length + len(content)
                    finished = _typed(choice.get("finish_reason"), str, None)
                    if finished:
                        finish_reason = finished
                        filtered = filtered or finish_reason == "content_filter"
                    watch.filtered = filtered
                    blocked = blocked or filtered
                    # Asynchronous-filter annotation chunks have no delta at all.
                    if content:
                        parts.append(content)
                        length += len(content)
                        if not blocked:
                            await on_text("".join(parts))
                if blocked and not filtered and watch.withhold_on_error:
                    withheld = True
                    break
        except (openai.APITimeoutError, openai.APIConnectionError, OSError, ValueError) as exc:
            # (Before APIError, of which the first two are kinds.) ValueError: an event whose
            # JSON is broken (the SDK parses each one with json.loads). A verdict that blocked
            # the answer before the cut stands, as after a clean cut (below): the answer is
            # returned filtered, never retried elsewhere nor counted against the deployment.
            if not filtered:
                raise ModelError(
                    "stream_cut",
                    deployment=self.deployment.name,
                    retryable=not parts,
                    fault=True,
                    partial_text="".join(parts),
                ) from exc
        except openai.APIError as exc:
            if not filtered:  # an error event after a blocking verdict: as a cut, above
                raise ModelError(
                    "stream_error",
                    deployment=self.deployment.name,
                    retryable=not parts,
                    fault=True,
                    body=exc.body if isinstance(exc.body, dict) else {},
                    partial_text="".join(parts),
                ) from exc
        finally:
            await stream.close()
        if (
            not filtered
            and not withheld
            and (finish_reason is None or (self._usage_promised and not usage_reported))
        ):
            # Azure ends every stream with a chunk that carries finish_reason and, as asked with
            # include_usage, then one with the usage (after the asynchronous filter's last
            # annotation). A body that ends cleanly without them was cut short (a gateway or
            # proxy closed it): not an answer, and part of it may not have been judged. A
            # verdict against the answer stands all the same, however the stream then ends (cut,
            # broken, an error event): it is withheld either way, and the deployment did its
            # part (the turn estimates the usage).
            raise ModelError(
                "stream_cut",
                deployment=self.deployment.name,
                retryable=not parts,
                fault=True,
                partial_text="".join(parts),
            )
        return Completion(
            text="".join(parts),
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            deployment=self.deployment.name,
            latency_ms=int((time.monotonic() - started) * 1000),
            prompt_filter_results=prompt_filters,
            output_annotations=output_annotations,
            usage_reported=usage_reported,
            reasoning_tokens=reasoning_tokens,
        )


@dataclass(frozen=True)
class ChatAnswer:
    """What a non-streaming chat completion says, read from its JSON body."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    usage_reported: bool
    prompt_filter_results: list[dict[str, Any]]
    output_annotations: list[dict[str, Any]]
    reasoning_tokens: int = 0


def _reasoning_tokens(usage: dict[str, Any] | None) -> int:
    details = _typed(usage.get("completion_tokens_details"), dict, {}) if usage else {}
    return _typed(details.get("reasoning_tokens"), int, 0)


def read_chat_completion(content: bytes) -> ChatAnswer:
    """The answer of a chat-completions body; ValueError for a body that is not one (broken
    JSON, or a field of the wrong type): such a deployment answered, but not usably."""
    body = json.loads(content)
    if not isinstance(body, dict):
        raise ValueError("a chat completion is a JSON object")
    choices = _typed(body.get("choices"), list, [])
    if not choices:
        # Azure answers a filtered prompt with a 400, never with a 200 that has no choice: such
        # a body (a gateway's error object with status 200) is not an answer to show.
        raise ValueError("a chat completion without a choice")
    choice = _typed(choices[0], dict, {})
    message = _typed(choice.get("message"), dict, {})
    usage = _typed(body.get("usage"), dict, None)
    output_filters = _typed(choice.get("content_filter_results"), dict, None)
    return ChatAnswer(
        text=_typed(message.get("content"), str, ""),
        finish_reason=_typed(choice.get("finish_reason"), str, None),
        prompt_tokens=_typed(usage.get("prompt_tokens"), int, 0) if usage else 0,
        completion_tokens=_typed(usage.get("completion_tokens"), int, 0) if usage else 0,
        reasoning_tokens=_reasoning_tokens(usage),
        usage_reported=usage is not None,
        prompt_filter_results=_prompt_filters(body),
        output_annotations=(
            [{"content_filter_results": output_filters}] if output_filters is not None else []
        ),
    )


def _typed(value: Any, kind: type[_T], default: _D) -> _T | _D:
    """`value` if it is a `kind`, `default` if it is absent (None); anything else is a broken
    body. (bool is an int to Python, never to JSON: a boolean token count is refused.)"""
    if value is None:
        return default
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ValueError(f"a chat completion field is not a {kind.__name__}")


def _end_offset(offsets: dict[str, Any]) -> int:
    """Where an asynchronous-filter annotation's judged text ends (characters); 0 when unsaid."""
    end = offsets.get("end_offset")
    return end if isinstance(end, int) and not isinstance(end, bool) else 0


def _prompt_filters(extras: dict[str, Any]) -> list[dict[str, Any]]:
    # Very old previews called it `prompt_annotations`.
    found = extras.get("prompt_filter_results") or extras.get("prompt_annotations")
    return [item for item in _typed(found, list, []) if isinstance(item, dict)]
