"""Consent to the organization's usage policy, before a user's first model call.

A `ComponentDialog`: a waterfall that shows the policy and asks with a text prompt (suggested
actions "I accept" / "I decline" where the channel shows them; typed answers in English or
Japanese work everywhere). In a shared conversation (a Teams group chat or channel) the bot only
receives messages that @mention it and Teams shows no suggested actions, so there the texts tell
the user to @mention the bot with their answer, and no buttons are offered. Acceptance is stored
in user state with its time and policy version; a new version asks again. The message that
triggered the question is kept in the dialog and answered right after acceptance, so nothing has
to be typed twice; the thanks for that acceptance comes from the gate, which knows by then
whether a limit refuses the message. One that was itself an answer ("I accept" before seeing the
policy) is not kept, and is not taken as the answer either.

The question keeps the version it shows (`version`, in its options): an answer is to that
version. When the policy's version changes while a question is open, the answer to it is no
answer to the new one (`shows_current`): the gate asks again with the new text, keeping the
waiting message (`waiting`).

The dialog's options: `pending` (the message waiting for the answer, or None), `shared`, and
`changed` (the question replaces one about an earlier version: its text says so).
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

from botbuilder.core import MessageFactory, StatePropertyAccessor, TurnContext
from botbuilder.dialogs import (
    ComponentDialog,
    DialogContext,
    DialogInstance,
    DialogState,
    DialogTurnResult,
    Prompt,
    PromptOptions,
    PromptValidatorContext,
    TextPrompt,
    WaterfallDialog,
    WaterfallStepContext,
)
from botbuilder.schema import Activity, CardAction, SuggestedActions

from chat.texts import language_of, localize
from chat.written import as_hiragana, strip_edges
from controls.clock import Clock
from controls.policy import UsagePolicy

CONSENT_DIALOG = "consent"
_STEPS = "consent.steps"
_ANSWER = "consent.answer"
# The option naming the policy version the question shows (set by `ConsentDialog.begin_dialog`).
_VERSION = "version"
# A plain string, not the ActionTypes enum: the prompt is kept in dialog state as JSON.
_IM_BACK = "imBack"

_ACCEPT = {"i accept", "accept", "yes", "y", "ok", "agree", "i agree"}
_DECLINE = {"i decline", "decline", "no", "n", "i do not accept", "i don't accept"}
# In hiragana where kana (`consent_answer` reads katakana as hiragana: ハイ, ﾊｲ are はい).
_ACCEPT_JA = {
    "同意する",
    "同意します",
    "同意いたします",
    "同意致します",
    "同意",
    "はい",
    "承諾",
    "承諾します",
    "承知しました",
    "承知いたしました",
    "承知致しました",
}
_DECLINE_JA = {
    "同意しない",
    "同意しません",
    "同意いたしません",
    "同意致しません",
    "同意できない",
    "同意できません",
    "同意できかねます",
    "同意しかねます",
    "同意いたしかねます",
    "同意致しかねます",
    "承諾しない",
    "承諾しません",
    "承諾しかねます",
    "いいえ",
    "拒否",
    "拒否します",
}
# Every answer, longest first: "同意しません" is read whole, never as "同意" and the rest.
_ANSWERS = sorted(
    [(phrase, True) for phrase in _ACCEPT | _ACCEPT_JA]
    + [(phrase, False) for phrase in _DECLINE | _DECLINE_JA],
    key=lambda answer: (-len(answer[0]), answer[0]),
)
# What may stand between and after the words of an answer ("はい、同意します。", "yes, I accept").
_SEPARATORS = " \t\r\n、,。.!"
# Longer than any answer with its punctuation: not an answer, and not worth reading.
_MAX_ANSWER_CHARS = 60


def consent_answer(text: str | None) -> bool | None:
    """True = accepted, False = declined, None = not an answer.

    An answer is one of the known words, or several of them that all say the same ("はい、同意
    します", "yes, I accept"), with punctuation between and after them. Anything else is no
    answer, so the question is asked again: a question ("同意します？"), a condition ("はい、
    でも…"), words that say both ("はい、同意しません"), and a negation glued to a word of
    acceptance that is not known as a whole ("承諾できない" is "承諾" and the unknown
    "できない")."""
    phrases = _answer_phrases(text)
    if not phrases:
        return None
    meanings = {meaning for _, meaning in phrases}
    return meanings.pop() if len(meanings) == 1 else None


# Accepting words that answer anything else too ("yes" to the assistant's own question): an
# acceptance of only these, just after the user accepted, is a message for the assistant, not
# the acceptance sent again (`says_it_accepts`).
_ALSO_ORDINARY = {"yes", "y", "ok", "はい", "承知しました", "承知いたしました", "承知致しました"}


def says_it_accepts(text: str | None) -> bool:
    """Whether `text` accepts the policy in words that say so (`I accept`, 同意します), not only
    with a yes or an ok."""
    phrases = _answer_phrases(text)
    return (
        consent_answer(text) is True
        and phrases is not None
        and any(phrase not in _ALSO_ORDINARY for phrase, _ in phrases)
    )


def _answer_phrases(text: str | None) -> list[tuple[str, bool]] | None:
    """The known answer words `text` is made of, in order; None when it is anything else."""
    normalized = unicodedata.normalize("NFKC", strip_edges(text or ""))
    normalized = as_hiragana(normalized).lower().replace("\u2019", "'")
    if len(normalized) > _MAX_ANSWER_CHARS or "?" in normalized:
        return None
    phrases: list[tuple[str, bool]] = []
    at = 0
    while True:
        while at < len(normalized) and normalized[at] in _SEPARATORS:
            at += 1
        if at == len(normalized):
            break
        found = next(
            (
                (phrase, meaning)
                for phrase, meaning in _ANSWERS
                if normalized.startswith(phrase, at) and _word_ends(normalized, at + len(phrase))
            ),
            None,
        )
        if found is None:
            return None
        phrases.append(found)
        at += len(found[0])
    return phrases


def _word_ends(text: str, at: int) -> bool:
    """Whether an English word ends at `at` ("no" in "not" does not); Japanese words need no
    space after them."""
    if at == len(text) or not text[at - 1].isascii():
        return True
    return not (text[at].isascii() and (text[at].isalnum() or text[at] == "'"))


def accepted_version(record: Any) -> str | None:
    return str(record.get("version")) if isinstance(record, dict) else None


def stands_over(ours: Any, theirs: Any) -> bool:
    """Whether acceptance record `ours` stands over `theirs`, both written at once (two turns
    on two instances): an acceptance over none, so consent is never undone; else the later."""
    if accepted_version(theirs) is None:
        return True
    if accepted_version(ours) is None:
        return False
    return _accepted_at(ours) >= _accepted_at(theirs)


def _accepted_at(record: dict[str, Any]) -> datetime:
    try:
        at = datetime.fromisoformat(str(record.get("accepted_at")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class ConsentDialog(ComponentDialog):  # type: ignore[misc]
    def __init__(
        self,
        policy: UsagePolicy,
        acceptance: StatePropertyAccessor,
        organization_name: str,
        clock: Clock,
    ) -> None:
        super().__init__(CONSENT_DIALOG)
        self._policy = policy
        self._acceptance = acceptance
        self._organization = organization_name
        self._clock = clock
        self.add_dialog(TextPrompt(_ANSWER, _is_answer))
        self.add_dialog(WaterfallDialog(_STEPS, [self._ask, self._decide]))
        self.initial_dialog_id = _STEPS

    async def begin_dialog(
        self, dialog_context: DialogContext, options: object = None
    ) -> DialogTurnResult:
        """Asks the question about this policy, keeping its version with the question."""
        shown = {**(options if isinstance(options, dict) else {}), _VERSION: self._policy.version}
        return await super().begin_dialog(dialog_context, shown)

    def shows_current(self, question: DialogInstance) -> bool:
        """Whether the open question (this dialog's instance) shows the current version. One
        asked before the version was kept with it: whether its prompt shows this version's
        text, as the intro and policy this dialog would show now in either language."""
        options = _steps_options(question)
        if _VERSION in options:
            return bool(options[_VERSION] == self._policy.version)
        prompt = _prompt_text(question)
        return any(
            self._intro(language) in prompt and self._policy.text_for(language) in prompt
            for language in ("en", "ja")
        )

    @staticmethod
    def waiting(question: DialogInstance) -> dict[str, Any] | None:
        """The message the open question (this dialog's instance) holds, if any."""
        pending = _steps_options(question).get("pending")
        return pending if isinstance(pending, dict) else None

    @staticmethod
    def hold(question: DialogInstance, pending: dict[str, Any] | None) -> None:
        """Makes the open question (this dialog's instance) hold `pending` in place of the
        message it holds (None: no message waits; the user deleted theirs)."""
        _steps_options(question)["pending"] = pending

    def _intro(self, locale: str | None) -> str:
        return localize(
            "consent_intro", locale, organization=self._organization, version=self._policy.version
        )

    async def _ask(self, step: WaterfallStepContext) -> DialogTurnResult:
        activity: Activity = step.context.activity
        locale = activity.locale
        accept, decline = _labels(locale)
        shared = _is_shared(step)
        if shared:
            bot = _mention_name(activity)
            question = localize(
                "consent_question_mention", locale, accept=accept, decline=decline, bot=bot
            )
            retry = localize(
                "consent_retry_mention", locale, accept=accept, decline=decline, bot=bot
            )
        else:
            question = localize("consent_question", locale, accept=accept, decline=decline)
            retry = localize("consent_retry", locale, accept=accept, decline=decline)
        parts = [self._intro(locale), self._policy.text_for(language_of(locale)), question]
        if (step.options or {}).get("changed"):
            # The user was shown an earlier version: what they replied to it was not taken.
            parts.insert(0, localize("consent_policy_changed", locale))
        text = "\n\n".join(parts)
        if shared:
            # Teams shows suggested actions only in 1:1 chats, and a button's reply would carry
            # no @mention: the bot would never receive it.
            options = PromptOptions(prompt=_markdown(text), retry_prompt=_markdown(retry))
        else:
            options = PromptOptions(
                prompt=_with_buttons(text, accept, decline),
                retry_prompt=_with_buttons(retry, accept, decline),
            )
        return await step.prompt(_ANSWER, options)

    async def _decide(self, step: WaterfallStepContext) -> DialogTurnResult:
        context: TurnContext = step.context
        locale = context.activity.locale
        accepted = bool(consent_answer(step.result))
        options = step.options or {}
        pending = options.get("pending")
        shown = options.get(_VERSION)
        if accepted and shown in (None, self._policy.version):
            # The version this question showed (None: asked before it was kept; the gate found
            # its prompt showing this version). A question about an earlier version is answered
            # here only when the user accepted the current one elsewhere: that record stands.
            await self._acceptance.set(
                context,
                {"version": self._policy.version, "accepted_at": self._clock().isoformat()},
            )
        if not accepted:
            accept, _ = _labels(locale)
            if _is_shared(step):
                declined = localize(
                    "consent_declined_mention",
                    locale,
                    accept=accept,
                    bot=_mention_name(context.activity),
                )
            else:
                declined = localize("consent_declined", locale, accept=accept)
            await context.send_activity(_markdown(declined))
        elif not pending:
            await context.send_activity(_markdown(localize("consent_accepted", locale)))
        # With a message waiting, the gate thanks once the limits have decided whether it is
        # answered now (dialogs.gate `_thank`): thanks promising its answer here could be
        # followed by a refusal.
        result = {"accepted": accepted, "pending": pending if accepted else None}
        return await step.end_dialog(result)


def _steps_options(question: DialogInstance) -> dict[str, Any]:
    """The options the question's waterfall was begun with (ComponentDialog keeps its inner
    dialogs' stack in its instance state; the waterfall is at its bottom)."""
    inner = question.state.get(ComponentDialog.persisted_dialog_state)
    stack = inner.dialog_stack if isinstance(inner, DialogState) else []
    for instance in stack:
        if instance.id == _STEPS:
            options = instance.state.get(WaterfallDialog.PersistedOptions)
            return options if isinstance(options, dict) else {}
    return {}


def _prompt_text(question: DialogInstance) -> str:
    """The text of the question's prompt as it was shown."""
    inner = question.state.get(ComponentDialog.persisted_dialog_state)
    stack = inner.dialog_stack if isinstance(inner, DialogState) else []
    for instance in stack:
        if instance.id == _ANSWER:
            options = instance.state.get(Prompt.persisted_options)
            prompt = getattr(options, "prompt", None)
            text = getattr(prompt, "text", None)
            return text if isinstance(text, str) else ""
    return ""


async def _is_answer(prompt: PromptValidatorContext) -> bool:
    return bool(prompt.recognized.succeeded) and consent_answer(prompt.recognized.value) is not None


def _is_shared(step: WaterfallStepContext) -> bool:
    return bool((step.options or {}).get("shared"))


def _mention_name(activity: Activity) -> str:
    """How the texts name the bot to @mention: its name as the channel gives it (Teams puts the
    bot's display name in `recipient.name`), else "the assistant"."""
    name = activity.recipient.name if activity.recipient is not None else None
    if isinstance(name, str) and name.strip():
        return name.strip()
    return localize("consent_mention_generic", activity.locale)


def _labels(locale: str | None) -> tuple[str, str]:
    return localize("consent_accept_label", locale), localize("consent_decline_label", locale)


def _markdown(text: str) -> Activity:
    activity = MessageFactory.text(text)
    activity.text_format = "markdown"
    return activity


def _with_buttons(text: str, accept: str, decline: str) -> Activity:
    activity = _markdown(text)
    activity.suggested_actions = SuggestedActions(
        actions=[
            CardAction(type=_IM_BACK, title=accept, value=accept),
            CardAction(type=_IM_BACK, title=decline, value=decline),
        ]
    )
    return activity
