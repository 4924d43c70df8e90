"""README.ja.md is the README in Japanese: it must not drift from README.md (issue 10).

The prose is translated, so it cannot be compared. What can be compared, and what a reader
copies, is compared: the section structure (heading levels, in order), the fenced code blocks
(byte for byte, info string included), the commands quoted inline, the link targets, the
tables' shapes, and that every ``#anchor`` link lands on a heading or an explicit anchor in its
own file (the Japanese headings have Japanese anchors, so README.ja.md keeps the English ones
with ``<a id="...">``). A changed command or a new section in one file shows up here until the
other follows.

Parsing is a small subset of CommonMark/GFM, with ``re`` only: fenced blocks (``` or ~~~,
closed by the same character at least as long; an unclosed fence runs to the end), ATX
headings outside them (a ``# comment`` in a bash block is not a heading), code spans, inline
links, reference definitions and autolinks, and pipe tables.
"""

import difflib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EN, JA = "README.md", "README.ja.md"

# An inline code span starting with one of these is a command a reader may paste.
COMMAND_PREFIXES = ("python3 ", "aws ", "sfn-pauser ", "curl ", "chalice ", "pip ", ".venv/bin/")

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
HEADING = re.compile(r"^ {0,3}(?P<marks>#{1,6})(?:[ \t]+(?P<title>.*?))?(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(?<!`)(?P<ticks>`+)(?!`)(?P<code>.+?)(?<!`)(?P=ticks)(?!`)", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?(?P<target>[^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(?P<target>[^\s>]+)>?", re.M)
AUTOLINK = re.compile(r"<(?P<target>[a-zA-Z][a-zA-Z0-9+.-]{1,31}:[^\s<>]*)>")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"(?P<anchor>[^\"]+)\"", re.I)
TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class CodeBlock:
    info: str  # the opening fence's info string, as written
    text: str  # the lines between the fences, less the fence's own indentation
    under: str  # the heading it sits under, for messages

    def show(self) -> str:
        return f"(under {self.under!r})\n```{self.info}\n{self.text}\n```"


@dataclass(frozen=True)
class Table:
    cells_per_row: tuple[int, ...]  # header row first; the delimiter row not counted
    under: str

    def shape(self) -> str:
        return f"{len(self.cells_per_row)} rows x {self.cells_per_row[0]} columns"


@dataclass
class Doc:
    name: str
    headings: list[tuple[int, str]] = field(default_factory=list)  # (level, title)
    code_blocks: list[CodeBlock] = field(default_factory=list)
    commands: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    tables: list[Table] = field(default_factory=list)
    anchors: set[str] = field(default_factory=set)  # what ``#anchor`` may point at


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def strip_code_spans(text: str) -> str:
    return CODE_SPAN.sub("CODE", text)


def parse(name: str, markdown: str) -> Doc:
    doc = Doc(name)
    prose: list[str] = []  # the lines outside fenced blocks, a blank line where a block was
    lines = markdown.split("\n")
    under = "(the top)"
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = FENCE.match(line)
        if opening and not (opening["fence"][0] == "`" and "`" in opening["info"]):
            indent, fence = len(opening["indent"]), opening["fence"]
            closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
            body: list[str] = []
            i += 1
            while i < len(lines) and not closing.match(lines[i]):
                body.append(re.sub(rf"^ {{0,{indent}}}", "", lines[i]))
                i += 1
            doc.code_blocks.append(CodeBlock(opening["info"], "\n".join(body), under))
            prose.append("")
            i += 1  # past the closing fence (or the end)
            continue
        heading = HEADING.match(line)
        if heading:
            title = (heading["title"] or "").strip()
            doc.headings.append((len(heading["marks"]), title))
            under = f"{heading['marks']} {title}"
        prose.append(line)
        i += 1

    seen: dict[str, int] = {}
    for _, title in doc.headings:
        base = slug(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        doc.anchors.add(base if count == 0 else f"{base}-{count}")

    text = "\n".join(prose)
    for paragraph in re.split(r"\n[ \t]*\n", text):
        for span in CODE_SPAN.finditer(paragraph):
            code = " ".join(span["code"].split())
            if code.startswith(COMMAND_PREFIXES):
                doc.commands.add(code)
        plain = strip_code_spans(paragraph)
        doc.links |= {m["target"] for m in INLINE_LINK.finditer(plain)}
        doc.links |= {m["target"] for m in LINK_DEFINITION.finditer(plain)}
        doc.links |= {m["target"] for m in AUTOLINK.finditer(plain)}
        doc.anchors |= {m["anchor"] for m in HTML_ANCHOR.finditer(plain)}

    under = "(the top)"
    i = 0
    while i < len(prose):
        heading = HEADING.match(prose[i])
        if heading:
            under = f"{heading['marks']} {(heading['title'] or '').strip()}"
        if "|" in prose[i] and i + 1 < len(prose) and "|" in prose[i + 1] and TABLE_DELIMITER.match(prose[i + 1]):
            rows = [prose[i]]
            i += 2
            while i < len(prose) and prose[i].strip() and "|" in prose[i]:
                rows.append(prose[i])
                i += 1
            doc.tables.append(Table(tuple(len(cells(row)) for row in rows), under))
            continue
        i += 1
    return doc


def cells(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return CELL_SEPARATOR.split(row)


# ---------------------------------------------------------------- the checks: each returns what differs


def section_differences(en: Doc, ja: Doc) -> list[str]:
    levels_en = [level for level, _ in en.headings]
    levels_ja = [level for level, _ in ja.headings]
    if levels_en == levels_ja:
        return []
    problems = []
    for level in range(1, 7):
        n_en, n_ja = levels_en.count(level), levels_ja.count(level)
        if n_en != n_ja:
            problems.append(f"{en.name} has {n_en} level-{level} headings, {ja.name} has {n_ja}")
    at = next(
        (k for k, (a, b) in enumerate(zip(levels_en, levels_ja, strict=False)) if a != b),
        min(len(levels_en), len(levels_ja)),
    )

    def heading(doc: Doc, k: int) -> str:
        if k >= len(doc.headings):
            return "no heading (the file ends)"
        level, title = doc.headings[k]
        return f"{'#' * level} {title}"

    previous = f" (after {heading(en, at - 1)!r} / {heading(ja, at - 1)!r})" if at else ""
    problems.append(
        f"the sections part at heading {at + 1}{previous}: "
        f"{en.name} has {heading(en, at)!r}, {ja.name} has {heading(ja, at)!r}"
    )
    return problems


def code_block_differences(en: Doc, ja: Doc) -> list[str]:
    keys_en = [(block.info, block.text) for block in en.code_blocks]
    keys_ja = [(block.info, block.text) for block in ja.code_blocks]
    problems = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=keys_en, b=keys_ja, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for a, b in zip(en.code_blocks[i1:i2], ja.code_blocks[j1:j2], strict=True):
                diff = "\n".join(
                    difflib.unified_diff(
                        [f"```{a.info}", *a.text.split("\n")],
                        [f"```{b.info}", *b.text.split("\n")],
                        en.name,
                        ja.name,
                        lineterm="",
                    )
                )
                problems.append(f"a code block differs {a.show().split(chr(10))[0]}:\n{diff}")
            continue
        problems += [f"{en.name} has a code block {ja.name} lacks: {b.show()}" for b in en.code_blocks[i1:i2]]
        problems += [f"{ja.name} has a code block {en.name} lacks: {b.show()}" for b in ja.code_blocks[j1:j2]]
    return problems


def command_differences(en: Doc, ja: Doc) -> list[str]:
    return [f"{en.name} quotes the command `{c}`, {ja.name} does not" for c in sorted(en.commands - ja.commands)] + [
        f"{ja.name} quotes the command `{c}`, {en.name} does not" for c in sorted(ja.commands - en.commands)
    ]


def link_differences(en: Doc, ja: Doc) -> list[str]:
    # The two files link to each other at the top; those links are checked on their own.
    links_en, links_ja = en.links - {JA}, ja.links - {EN}
    return [f"{en.name} links to {t}, {ja.name} does not" for t in sorted(links_en - links_ja)] + [
        f"{ja.name} links to {t}, {en.name} does not" for t in sorted(links_ja - links_en)
    ]


def table_differences(en: Doc, ja: Doc) -> list[str]:
    problems = []
    if len(en.tables) != len(ja.tables):
        problems.append(f"{en.name} has {len(en.tables)} tables, {ja.name} has {len(ja.tables)}")
    shapes_en = [table.cells_per_row for table in en.tables]
    shapes_ja = [table.cells_per_row for table in ja.tables]
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=shapes_en, b=shapes_ja, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for k, (a, b) in enumerate(zip(en.tables[i1:i2], ja.tables[j1:j2], strict=True), i1 + 1):
                problems.append(
                    f"table {k} differs: {en.name} (under {a.under!r}) has {a.shape()}, "
                    f"cells per row {a.cells_per_row}; "
                    f"{ja.name} (under {b.under!r}) has {b.shape()}, cells per row {b.cells_per_row}"
                )
            continue
        problems += [
            f"{en.name} has a table {ja.name} lacks (under {t.under!r}): {t.shape()}" for t in en.tables[i1:i2]
        ]
        problems += [
            f"{ja.name} has a table {en.name} lacks (under {t.under!r}): {t.shape()}" for t in ja.tables[j1:j2]
        ]
    return problems


def anchor_differences(doc: Doc) -> list[str]:
    return [
        f"{doc.name} links to #{t[1:]}, which is no heading or <a id> of its own"
        for t in sorted(doc.links)
        if t.startswith("#") and t[1:] not in doc.anchors
    ]


def drift(en_text: str, ja_text: str) -> list[str]:
    en, ja = parse(EN, en_text), parse(JA, ja_text)
    return (
        section_differences(en, ja)
        + code_block_differences(en, ja)
        + command_differences(en, ja)
        + link_differences(en, ja)
        + table_differences(en, ja)
        + anchor_differences(en)
        + anchor_differences(ja)
    )


# ---------------------------------------------------------------- the two READMEs


@cache
def text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


@cache
def docs() -> tuple[Doc, Doc]:
    return parse(EN, text(EN)), parse(JA, text(JA))


def report(problems: list[str]) -> str:
    return "README.md and README.ja.md have drifted apart:\n- " + "\n- ".join(problems)


def test_each_readme_links_to_the_other_right_under_its_title():
    for name, other, label in ((EN, JA, "[日本語]"), (JA, EN, "[English]")):
        top = text(name).split("\n")[:4]
        assert top[0].startswith("# "), f"{name} does not start with its title"
        assert any(f"{label}({other})" in line for line in top[1:]), f"{name} has no {label}({other}) under its title"


def test_the_same_sections_in_the_same_order():
    en, ja = docs()
    assert en.headings, "no headings parsed from README.md"
    assert not (problems := section_differences(en, ja)), report(problems)


def test_the_same_code_blocks_byte_for_byte():
    en, ja = docs()
    assert en.code_blocks, "no code blocks parsed from README.md"
    assert not (problems := code_block_differences(en, ja)), report(problems)


def test_the_same_commands_inline():
    en, ja = docs()
    assert "python3 dev.py local --demo" in en.commands
    assert not (problems := command_differences(en, ja)), report(problems)


def test_the_same_link_targets():
    en, ja = docs()
    assert "docs/deploy.md" in en.links
    assert not (problems := link_differences(en, ja)), report(problems)


def test_the_same_tables():
    en, ja = docs()
    assert en.tables, "no tables parsed from README.md"
    assert not (problems := table_differences(en, ja)), report(problems)


def test_every_anchor_link_lands_in_its_own_file():
    en, ja = docs()
    assert not (problems := anchor_differences(en) + anchor_differences(ja)), report(problems)


# ---------------------------------------------------------------- the checker catches drift


def test_the_checker_finds_nothing_between_a_readme_and_itself():
    assert drift(text(EN), text(EN).replace(f"[日本語]({JA})", f"[English]({EN})")) == []


def test_the_checker_reports_a_changed_command_in_a_code_block():
    before = 'sfn-pauser off --api "$API" --state-machine "$ARN" --wait'
    assert before in text(EN)
    changed = text(EN).replace(before, before.replace("--wait", "--wait --timeout 600"))
    problems = drift(changed, text(JA))
    assert len(problems) == 1, problems
    assert problems[0].startswith("a code block differs (under '### With the REST API or the CLI')"), problems
    assert "--timeout 600" in problems[0], problems


def test_the_checker_reports_a_code_block_only_one_file_has():
    extra = "\n```bash\npython3 dev.py clean\n```\n"
    problems = drift(text(EN) + extra, text(JA))
    assert problems == [
        "README.md has a code block README.ja.md lacks: (under '## Development')\n```bash\npython3 dev.py clean\n```"
    ]
    problems = drift(text(EN), text(JA) + extra)
    assert len(problems) == 1 and problems[0].startswith("README.ja.md has a code block README.md lacks"), problems


def test_the_checker_reports_an_extra_section():
    sections = sum(level == 2 for level, _ in docs()[0].headings)
    problems = drift(text(EN) + "\n## Uninstalling\n\nDelete the stack.\n", text(JA))
    assert f"{EN} has {sections + 1} level-2 headings, {JA} has {sections}" in problems, problems
    assert any("README.md has '## Uninstalling', README.ja.md has 'no heading (the file ends)'" in p for p in problems)

    changed = text(JA).replace("\n### ", "\n## ", 1)  # a subsection turned into a section
    problems = drift(text(EN), changed)
    assert any(p.startswith("the sections part at heading") for p in problems), problems


def test_a_comment_in_a_code_block_is_no_heading():
    doc = parse("x.md", "# Title\n\n```bash\n# a comment\n## another\n```\n\n~~~\n# and this\n~~~\n\n## Real\n")
    assert doc.headings == [(1, "Title"), (2, "Real")]
    assert [block.text for block in doc.code_blocks] == ["# a comment\n## another", "# and this"]
    unclosed = parse("x.md", "# Title\n\n````md\n```\n# inside\n")  # a longer fence, never closed
    assert unclosed.headings == [(1, "Title")] and unclosed.code_blocks[0].text == "```\n# inside\n"


def test_the_checker_reports_a_changed_inline_command():
    changed = text(JA).replace("`python3 dev.py policies`", "`python3 dev.py iam`")
    assert changed != text(JA)
    problems = drift(text(EN), changed)
    assert "README.md quotes the command `python3 dev.py policies`, README.ja.md does not" in problems, problems
    assert "README.ja.md quotes the command `python3 dev.py iam`, README.md does not" in problems, problems


def test_the_checker_reports_a_changed_link_and_an_anchor_that_lands_nowhere():
    changed = text(JA).replace("(docs/scale.md)", "(docs/sizing.md)")
    assert changed != text(JA)
    problems = drift(text(EN), changed)
    assert problems == [
        "README.md links to docs/scale.md, README.ja.md does not",
        "README.ja.md links to docs/sizing.md, README.md does not",
    ]
    changed = text(JA).replace('<a id="switching-maintenance"></a>', "")
    assert changed != text(JA)
    assert drift(text(EN), changed) == [
        "README.ja.md links to #switching-maintenance, which is no heading or <a id> of its own"
    ]


def test_the_checker_reports_a_table_that_lost_a_row_or_a_column():
    lines = text(EN).split("\n")
    without_row = "\n".join(line for line in lines if not line.startswith("| `LogLevel` |"))
    problems = drift(without_row, text(JA))
    assert len(problems) == 1, problems
    expected = "table 4 differs: README.md (under '## Configuration') has 11 rows x 3 columns"
    assert problems[0].startswith(expected), problems

    narrower = text(EN).replace("| route | body / query | does |\n|---|---|---|", "| route | does |\n|---|---|")
    assert narrower != text(EN)
    problems = drift(narrower, text(JA))
    assert len(problems) == 1 and "has 14 rows x 2 columns" in problems[0], problems

    tables = len(docs()[1].tables)
    no_table = text(JA).replace("|---|---|---|", "", 1)  # the first table, no longer a table
    assert drift(text(EN), no_table) == [
        f"README.md has {tables} tables, README.ja.md has {tables - 1}",
        "README.md has a table README.ja.md lacks (under '## REST API'): 14 rows x 3 columns",
    ]
