"""Slash commands: `/new`, `/help`, `/usage`, `/feedback <text>`, with Japanese aliases.

A command is a message whose first word is a known command after Unicode NFKC normalization, so a
full-width `／ｎｅｗ` from a Japanese IME works like `/new`, and a sentence's end (`/ヘルプ。`,
`/usage?`) or an invisible character pasted before it (a zero-width space, a byte order mark) does
not hide it. Text like `/usr/bin/env` is not a command and goes to the assistant.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from chat.kept import KeptWrites, with_kept
from chat.service import TurnInput
from chat.texts import localize, moment_text
from chat.written import JAPANESE_LETTERS, strip_edges
from controls.quotas import Quotas
from storage.base import MessageStore, StoreError
from storage.ids import safe_id
from storage.models import MAX_FEEDBACK_CHARS, Feedback, Message, Role
from storage.ratings import Ratings, own_feedback, with_comment

log = logging.getLogger(__name__)

FEEDBACK_SEARCH_DEPTH = 50


class Command(StrEnum):
    NEW = "new"
    HELP = "help"
    USAGE = "usage"
    FEEDBACK = "feedback"


_NAMES: dict[str, Command] = {
    "new": Command.NEW,
    "新規": Command.NEW,
    "help": Command.HELP,
    "ヘルプ": Command.HELP,
    "usage": Command.USAGE,
    "使用量": Command.USAGE,
    "利用状況": Command.USAGE,
    "feedback": Command.FEEDBACK,
    "フィードバック": Command.FEEDBACK,
}
# One word after the slash; anything with another slash (a path) is not a command.
_COMMAND = re.compile(r"^/(?P<name>[^\s/]{1,30})(?:\s+(?P<args>.*))?$", re.DOTALL)
# What ends a sentence (after NFKC: ． ！ ？ are . ! ?), dropped from the end of a command's name.
_SENTENCE_END = "。.!?"
# What may end a command's name with its text right after it, in either width.
_NAME_END = re.compile("[:：,，;；、]")
# A name that is not ASCII is taken for a command (a mistyped one) only when it could be one: a
# short word in Japanese or ASCII letters and digits with no hiragana, as the Japanese names are
# katakana and kanji, e.g. "/ヘプル"; "/😀", "/→次へ", "/はい" or a request written after a
# slash ("／この文章を英語に翻訳して。") goes to the assistant.
_WORD = re.compile(f"[0-9a-z_\\-{JAPANESE_LETTERS}]+")
_MISTYPED_CHARS = 8
# What may follow an English name glued to it: a word in kanji or katakana (`/new東京`), never
# hiragana, which starts the grammar around a name (`/newの使い方は？`, `/usageを見たい`).
_KANJI_OR_KATAKANA = re.compile(
    "[\u3005\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]"
)
# What a Japanese IME types for the slash key when its input is not converted (after NFKC the
# half-width one is the full-width one).
_IME_SLASHES = ("・", "･")
_HIRAGANA = re.compile("[\u3041-\u309f]")


@dataclass(frozen=True)
class ParsedCommand:
    command: Command | None  # None: it looks like a command but is not one we know
    name: str
    args: str = ""


def parse_command(text: str) -> ParsedCommand | None:
    stripped = strip_edges(text)
    if stripped[:1] in _IME_SLASHES:
        return _ime_slash_command(stripped)
    if not stripped or stripped[0] not in "/／":
        return None
    head = re.match(r"(\S+)\s*(.*)", stripped, re.DOTALL)
    if head is None:
        return None
    token = head[1]
    name_end = _NAME_END.search(token)
    if name_end is not None:
        # `/フィードバック：回答が古いです`, `/feedback, outdated`: a name, then a colon or a comma
        # with no space, as people type it: what follows is the command's text, as written.
        known = unicodedata.normalize("NFKC", token[1 : name_end.start()]).lower()
        if known in _NAMES:
            text_after = f"{token[name_end.end() :]} {head[2]}".strip()
            return ParsedCommand(_NAMES[known], f"/{known}", text_after)
    first = unicodedata.normalize("NFKC", token).lower()
    match = _COMMAND.match(f"{first} {head[2]}".strip())
    if match is None:
        return None
    name = match["name"].rstrip(_SENTENCE_END) or match["name"]
    command = _NAMES.get(name)
    if command is None:
        glued = _glued_to_japanese(token)
        if glued is not None:
            known, text_after = glued
            return ParsedCommand(_NAMES[known], f"/{known}", f"{text_after} {head[2]}".strip())
    if command is None and not name.isascii() and not _mistyped(name):
        return None
    return ParsedCommand(command, f"/{name}", (match["args"] or "").strip())


def _glued_to_japanese(token: str) -> tuple[str, str] | None:
    """An English name with a Japanese word right after it, as people type with no space
    between the two scripts (`/new東京の人口は？`): the name, and the text after it as written.
    Not before hiragana (`/newの使い方は？` asks about the command); and a Japanese name is
    never split so: `/新規事業の案` is a word of its own, not `/新規`."""
    for end in range(2, len(token)):
        known = unicodedata.normalize("NFKC", token[1:end]).lower()
        if known in _NAMES and known.isascii() and _KANJI_OR_KATAKANA.match(token[end:]):
            return known, token[end:]
    return None


def _ime_slash_command(stripped: str) -> ParsedCommand | None:
    """`・ヘルプ`: the slash key of a Japanese IME gives ・ unless converted. Only a message that
    is a Japanese name and nothing else is taken for its command, as ・ also starts the items
    of a list (`・新規顧客の件`, `・ヘルプデスク`)."""
    name = unicodedata.normalize("NFKC", stripped[1:]).strip().rstrip(_SENTENCE_END)
    command = _NAMES.get(name)
    if command is None or name.isascii():
        return None
    return ParsedCommand(command, f"/{name}")


def _mistyped(name: str) -> bool:
    return (
        len(name) <= _MISTYPED_CHARS
        and _WORD.fullmatch(name) is not None
        and _HIRAGANA.search(name) is None
    )


class _SeqAfter:
    """Sequence numbers in the chat service's unit (microseconds), above a conversation's last."""

    @staticmethod
    def next(last: int) -> int:
        return max(time.time_ns() // 1000, last + 1)


# Writes of a /feedback comment: again when a button's rating came in between (each retry sees
# what the last write replaced; a third change within one comment's writes is left as it is).
_FEEDBACK_WRITES = 3


class Commands:
    def __init__(
        self,
        messages: MessageStore,
        quotas: Quotas,
        ratings: Ratings,
        kept: KeptWrites | None = None,
    ) -> None:
        self._messages = messages
        self._quotas = quotas
        # The chat service's answers whose records the store refused (chat.kept).
        self._kept = kept
        # Shared with the feedback buttons (bot.feedback): a comment that replaces someone
        # else's dislike takes it off the conversation's count, in turn with their changes.
        self._ratings = ratings

    async def run(self, parsed: ParsedCommand, turn: TurnInput) -> str | None:
        """Carry out a command; the localized reply to show, None when there is nothing to say
        (a `/new` the channel sent again: it was answered the first time)."""
        locale = turn.locale
        if parsed.command is None:
            return localize("unknown_command", locale, command=parsed.name)
        log.info("command", extra={"event": "command", "command": parsed.command.value})
        if parsed.command is Command.NEW:
            if not await self._new_context(turn):
                log.info("a redelivered /new was dropped", extra={"event": "command_redelivered"})
                return None
            return localize("context_reset", locale)
        if parsed.command is Command.USAGE:
            return await self._usage(turn)
        if parsed.command is Command.FEEDBACK:
            return await self._feedback(turn, parsed.args)
        return localize("help", locale)

    async def _new_context(self, turn: TurnInput) -> bool:
        """A marker the history window stops at; earlier messages stay stored. False when the
        marker was there already: the channel redelivered the command (e.g. after a restart,
        which empties the turn queue's dedupe)."""
        conversation_id = safe_id(turn.conversation_key)
        last = await self._messages.recent_messages(conversation_id, 1)
        marker = Message(
            id=safe_id(f"context_reset|{turn.activity_id or time.time_ns()}"),
            conversation_id=conversation_id,
            seq=_SeqAfter.next(last[-1].seq if last else 0),
            role=Role.CONTEXT_RESET,
            activity_id=turn.activity_id or None,
            user_id=turn.user_id,
            tenant_id=turn.tenant_id,
            channel_id=turn.channel_id,
            locale=turn.locale,
            # Dated by its arrival, as prompts are: an erasure's second pass judges by it.
            created_at=turn.arrived_at(),
        )
        return await self._messages.add_message(marker)

    async def _usage(self, turn: TurnInput) -> str:
        # The tenant's totals are for administrators; its users see that its limit applies and
        # how much of it is used in this quota day, as a percentage (a refusal below 100% then
        # makes sense). The quota day is the UTC day: its end is said in the user's time zone.
        tenant_limit = self._quotas.limits_for(turn.tenant_id).tenant_tokens_per_day
        report = await self._quotas.usage(
            turn.user_id, turn.tenant_id, with_tenant=bool(tenant_limit)
        )
        locale = turn.locale
        reset = moment_text(report.day_resets_at, locale, turn.time_zone)
        tenant_lines: list[str] = []
        if tenant_limit and report.tenant_tokens_today is not None:
            share = _share(report.tenant_tokens_today, tenant_limit, locale)
            tenant_lines.append(localize("usage_tenant", locale, share=share, reset=reset))
        if not report.counted:
            # Neither user limit is set, so the user is not counted: no numbers of theirs.
            mine = "usage_no_user_limits" if tenant_lines else "usage_no_limits"
            return "\n\n".join(
                [localize("usage_title", locale), localize(mine, locale), *tenant_lines]
            )
        unlimited = localize("usage_unlimited", locale)
        lines = [
            localize("usage_title", locale),
            localize(
                "usage_tokens",
                locale,
                used=report.tokens_today,
                limit=report.limits.user_tokens_per_day or unlimited,
                reset=reset,
            ),
            localize(
                "usage_requests",
                locale,
                used=report.requests_this_minute,
                limit=report.limits.user_requests_per_minute or unlimited,
            ),
            *tenant_lines,
        ]
        return "\n\n".join(lines)

    async def _feedback(self, turn: TurnInput, text: str) -> str:
        locale = turn.locale
        comment = text.strip()[:MAX_FEEDBACK_CHARS]
        if not comment:
            return localize("feedback_empty", locale)
        conversation_id = safe_id(turn.conversation_key)
        # The last answer may be one whose record the store refused, kept to be written again
        # (chat.kept): the comment is its, kept behind it and stored on it once it is written.
        kept = self._kept.messages_of(conversation_id) if self._kept is not None else []
        try:
            recent = await self._messages.recent_messages(conversation_id, FEEDBACK_SEARCH_DEPTH)
        except StoreError:
            # A store that refused the answer's write most likely refuses this read too; the
            # kept answer is the last this instance knows of (another instance could have
            # stored a newer one meanwhile: the comment then goes on this one, as the user's
            # most likely meaning, rather than being refused).
            if not any(m.role is Role.ASSISTANT for m in kept):
                raise
            recent = []
        recent = with_kept(recent, kept, FEEDBACK_SEARCH_DEPTH)
        answer = next((m for m in reversed(recent) if m.role is Role.ASSISTANT), None)
        if answer is None:
            return localize("feedback_no_answer", locale)
        if self._kept is not None and self._kept.keep_rating(
            conversation_id,
            answer.id,
            lambda: self._comment(conversation_id, answer, turn, comment),
        ):
            log.info(
                "feedback kept until its answer is stored",
                extra={"event": "feedback_kept", "with_text": True},
            )
            return localize("feedback_thanks", locale)
        await self._comment(conversation_id, answer, turn, comment)
        return localize("feedback_thanks", locale)

    async def _comment(
        self, conversation_id: str, answer: Message, turn: TurnInput, comment: str
    ) -> None:
        """Store `comment` on `answer` (as read: a rating stored since is seen in what the
        write replaced, and kept)."""
        # The user's own like/dislike given with a button stays, and so does their comment
        # given earlier (with the button or another /feedback): the comment is added to them.
        expected = answer.feedback  # what this write expects to replace
        basis = expected  # what it adds the comment to
        for _ in range(_FEEDBACK_WRITES):
            written = _commented(basis, turn, comment)
            change = await self._ratings.store(
                conversation_id, answer, written, owner=turn.summary_owner
            )
            if change is None:
                break
            if _rating(change.previous) == _rating(expected):
                break
            # A button's rating (and its comment) was stored between the read and this write:
            # the user's own is their latest, so the comment must not undo it, and is written
            # again with it (someone else's is replaced again). Each write counted what it
            # replaced (`Ratings.store`).
            expected, basis = written, change.previous
        log.info("feedback stored", extra={"reaction": written.reaction, "with_text": True})


def _rating(feedback: Feedback | None) -> tuple[Literal["like", "dislike"] | None, str, str]:
    if feedback is None:
        return (None, "", "")
    return (feedback.reaction, feedback.text, feedback.user_id)


def _commented(basis: Feedback | None, turn: TurnInput, comment: str) -> Feedback:
    """The feedback a /feedback `comment` in `turn` stores on an answer that has `basis`. An
    answer holds one person's feedback, as it holds one rating: the user's own reaction and
    comments are kept and the comment added to them. Feedback someone else gave (in a group chat
    or channel) is replaced, as their rating is by another's click: neither their words nor
    their reaction may be stored as this user's. So is feedback stored before raters were
    recorded in a shared conversation, where whose it is cannot be told; in a 1:1 chat it can
    only be the user's own. Dated by the command's arrival, as prompts are: an erasure's second
    pass clears a comment that waited in the queue from before it (storage.late)."""
    rater, at = turn.user_id, turn.arrived_at()
    if basis is not None and own_feedback(basis, rater, turn.shared):
        return Feedback(
            reaction=basis.reaction, text=with_comment(basis.text, comment), user_id=rater, at=at
        )
    return Feedback(text=comment, user_id=rater, at=at)


def _share(used: int, limit: int, locale: str) -> str:
    """How much of a limit is used, as `/usage` says it: "about 37%"; "<1%" for some but less
    than 1% (about 0% would read as none)."""
    if 0 < used * 100 < limit:
        return localize("usage_share_under_one", locale)
    return localize("usage_share_about", locale, percent=min(100, used * 100 // limit))
