"""Consent answers and commands as Japanese (and English) users type them: what counts as an
acceptance or a decline, what is asked again, and what is a command. Consent is a legal act:
anything ambiguous must not count as acceptance, and a decline must never read as one."""

from __future__ import annotations

import re

import pytest

from chat.texts import localize
from config import PROJECT_ROOT
from dialogs.commands import Command, parse_command
from dialogs.consent import consent_answer


@pytest.mark.parametrize(
    "text",
    [
        "はい、同意します。",
        "はい、同意します",
        "はい 同意します",
        "はい\u3000同意します！",
        "同意いたします",
        "同意致します。",
        "ハイ",
        "ﾊｲ",
        "ﾊｲ｡",
        "承知しました",
        "承知いたしました。",
        "\u200bはい\ufeff",
        "yes, I accept",
        # Still understood, as before.
        "はい。",
        "はい！",
        "同意します。",
        "ＯＫ",
        "\u3000同意します\u3000",
        "I accept",
    ],
)
def test_acceptances_as_people_type_them_are_acceptances(text: str) -> None:
    assert consent_answer(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "いいえ、同意しません",
        "いいえ、同意しません。",
        "イイエ",
        "ｲｲｴ",
        "同意できません",
        "同意できかねます",
        "同意しかねます",
        "同意いたしません",
        "承諾しかねます",
        "I don\u2019t accept",
        "no",
        "同意しない",
    ],
)
def test_declines_as_people_type_them_are_declines(text: str) -> None:
    assert consent_answer(text) is False


@pytest.mark.parametrize(
    "text",
    [
        # Conditions and hesitation.
        "はい、でも...",
        "はい、でも確認させてください",
        "yes but",
        # Questions.
        "同意します？",
        "同意します?",
        "はい？",
        "同意しますか",
        "はい?同意します",
        # Both at once.
        "はい、同意しません",
        "いいえ、同意します",
        "yes no",
        # A negation or more words glued to a word of acceptance.
        "不同意",
        "承諾できない",
        "同意しないでください",
        "同意しますが",
        "okです",
        "not",
        # Nothing, or too much to be an answer.
        "",
        "。",
        "\u200b",
        "はい、" * 30,
        "maybe",
    ],
)
def test_ambiguous_replies_are_no_answer(text: str) -> None:
    assert consent_answer(text) is None


@pytest.mark.parametrize(
    ("text", "command", "name", "args"),
    [
        ("/ヘルプ。", Command.HELP, "/ヘルプ", ""),
        ("/使用量？", Command.USAGE, "/使用量", ""),
        ("／利用状況！", Command.USAGE, "/利用状況", ""),
        ("/help.", Command.HELP, "/help", ""),
        ("/usage?", Command.USAGE, "/usage", ""),
        ("\u200b/usage", Command.USAGE, "/usage", ""),
        ("\ufeff／ヘルプ", Command.HELP, "/ヘルプ", ""),
        ("/フィードバック。 とても良い！", Command.FEEDBACK, "/フィードバック", "とても良い！"),
        # A colon or a comma right after the name, in either width: the text after it is the
        # command's, as written (a Japanese comment has no space to end its first word).
        (
            "/フィードバック：回答が古く、規程の改定が反映されていませんでした",
            Command.FEEDBACK,
            "/フィードバック",
            "回答が古く、規程の改定が反映されていませんでした",
        ),
        ("/フィードバック、とても良い", Command.FEEDBACK, "/フィードバック", "とても良い"),
        ("/feedback: Outdated answer", Command.FEEDBACK, "/feedback", "Outdated answer"),
        ("／ＦＥＥＤＢＡＣＫ，Too long", Command.FEEDBACK, "/feedback", "Too long"),
        ("/help;", Command.HELP, "/help", ""),
        # An unknown word right after the slash is an unknown command; in Japanese, a short one
        # in katakana or kanji, as the Japanese names are (a mistyped name).
        ("/ヘプル", None, "/ヘプル", ""),
        ("／ヘプル。", None, "/ヘプル", ""),
        ("/新規作成", None, "/新規作成", ""),
        ("/hlep", None, "/hlep", ""),
        # An English name with Japanese right after it, no space between the two scripts.
        ("/new東京の人口は？", Command.NEW, "/new", "東京の人口は？"),
        ("／ｎｅｗ　東京", Command.NEW, "/new", "東京"),
        ("/feedback回答が古い", Command.FEEDBACK, "/feedback", "回答が古い"),
        ("/NEW東京 大阪", Command.NEW, "/new", "東京 大阪"),
        # The slash key of a Japanese IME, unconverted: a Japanese name alone is its command.
        ("・ヘルプ", Command.HELP, "/ヘルプ", ""),
        ("･ﾍﾙﾌﾟ", Command.HELP, "/ヘルプ", ""),
        ("・新規。", Command.NEW, "/新規", ""),
        ("・使用量", Command.USAGE, "/使用量", ""),
    ],
)
def test_commands_are_found_past_a_sentence_end_and_invisible_characters(
    text: str, command: Command | None, name: str, args: str
) -> None:
    parsed = parse_command(text)
    assert parsed is not None
    assert (parsed.command, parsed.name, parsed.args) == (command, name, args)


@pytest.mark.parametrize(
    "text",
    [
        "/usr/bin/env",
        "/😀",
        "/→次へ",
        "/ヘルプ。ありがとう",
        "\u200b",
        "ヘルプ",
        "/。",
        # Hiragana, or a long run of letters, after a slash: a request, not a mistyped command.
        "／この文章を英語に翻訳して。",
        "/はい",
        "/ほげ",
        "/フィードバックヲオクル",
        "/usr/bin/env: python3",
        "/ばか：だめ",
        # A Japanese name runs into the word it starts: no command there; nor does an English
        # name before hiragana, which asks about it.
        "/新規事業の案を出して",
        "/newの使い方は？",
        "/feedbackの送り方を教えて",
        "/newって何？",
        "/usageを見たい",
        # ・ starts a list's items: only a Japanese name alone after it is a command.
        "・ヘルプデスクの電話番号",
        "・新規 顧客の件",
        "・help",
        "・",
    ],
)
def test_what_is_no_command_word_is_not_a_command(text: str) -> None:
    assert parse_command(text) is None


def readme_command_aliases() -> set[str]:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `/\w+[^`]*` \| (.+?) \|", readme, re.MULTILINE)
    assert rows, "the README has a table of commands"
    return {alias.split()[0] for row in rows for alias in re.findall(r"`([^`]+)`", row)}


@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
def test_help_lists_every_japanese_alias_the_readme_lists(locale: str) -> None:
    aliases = readme_command_aliases()
    assert {"/新規", "/ヘルプ", "/利用状況", "/使用量", "/フィードバック"} <= aliases
    for alias in aliases:
        parsed = parse_command(alias)
        assert parsed is not None and parsed.command is not None, alias
    help_text = localize("help", locale)
    assert sorted(alias for alias in aliases if alias not in help_text) == []
