"""What a published file may say: user-supplied text made literal for Markdown and HTML, and local paths made relative.

Everything the model card shows that a user chose (class names from folder names or dataset features, dataset names,
splits, paths, commands, prompts and the text encoder's name) passes through one of three functions, never raw:

    escape_markdown("x`<img src=x onerror=alert(1)>`y")  # 'x\\`&lt;img src=x onerror=alert(1)&gt;\\`y'
    code_span("a|b", in_table=True)                       # '`a\\|b`'
    python_literal("a```b")                               # in a code block: "'a\\x60\\x60\\x60b'"

Local paths never leave the machine (`PublicPaths`): publishing rewrites every string of the JSON and Markdown files
it uploads, so that the run folder itself becomes `.`, a path inside it becomes relative to it, and any other local
path (a data folder, a cache, a configuration folder) becomes its last component, the dataset's or folder's name.
"""

import os
import re
from pathlib import Path

# Characters Markdown reads as markup anywhere in a line (code, emphasis, links, tables, strikethrough, math); the
# ones that only matter at the start of a line (#, +, -, 1.) never start a value the card shows.
MARKDOWN_SPECIAL = re.compile(r"[\\`*_\[\]|~$]")
# What GFM turns into a link with no markup at all (autolink literals): a scheme's `://` and a `www.` host. A backslash
# before the `:` or the `.` shows the same text and breaks the literal, so a user's URL is shown, never linked.
AUTOLINK_LITERAL = re.compile(r"(?<=[A-Za-z0-9])(:)(?=//)|(?<![\w.])((?i:www))(\.)")
# An absolute path left in a string after the known folders were replaced: `/...` or `~/...` not inside a URL.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])~?/(?:[\w.+@%=,~-]+/)*[\w.+@%=,~-]*")


def one_line(value) -> str:
    """`value` as text on one line: newlines and tabs (which end a table row or a paragraph) become spaces."""
    return " ".join(str(value).split())


def escape_markdown(value) -> str:
    """
    User-supplied `value` as literal text in Markdown and in the HTML it renders to: on one line, every character
    Markdown could read as markup escaped with a backslash (`MARKDOWN_SPECIAL`, `|` included, so that a table cell
    stays one cell), a URL's `://` and a `www.` host escaped too (GFM links those without markup), and `&`, `<`, `>`
    as HTML entities (no tag, no attribute, no entity of the user's).
    """
    text = MARKDOWN_SPECIAL.sub(lambda match: "\\" + match.group(0), one_line(value))
    text = AUTOLINK_LITERAL.sub(lambda match: "\\:" if match.group(1) else match.group(2) + "\\.", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code_span(value, in_table: bool = False) -> str:
    """
    User-supplied `value` as inline code, shown exactly: delimited by one backtick more than its longest run of
    backticks (CommonMark), padded when it starts or ends with one; on one line; in a table, `|` escaped (GFM splits
    cells before it reads code spans). Inside a code span HTML is shown as text.
    """
    text = one_line(value)
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def python_literal(value) -> str:
    """
    User-supplied `value` (a prompt, a class name) as a Python literal inside a fenced code block: `repr`, which
    writes line breaks and control characters as escapes, with every backtick written `\\x60`, so that no run of
    backticks can close the fence. The literal evaluates to `value`.
    """
    return repr(value).replace("`", "\\x60")


def is_local_path(value) -> bool:
    """A string that names a local file or folder: absolute, `./` `../` `~` relative, or existing here."""
    if not isinstance(value, str) or not value or "://" in value:
        return False
    return os.path.isabs(value) or value.startswith(("./", "../", "~")) or os.path.exists(value)


class PublicPaths:
    """
    Rewrites the local paths in the files published from `folder`: the folder itself (however it was spelled) is
    `.`, a path inside it is relative to it, another local path is its name. `paths` are the other local paths the
    run recorded (its options' values), so that their exact spelling, spaces included, is found inside longer strings
    (skip reasons, commands); any absolute path left after that is shortened to its name as well.
    """

    def __init__(self, folder: str | os.PathLike, paths=()):
        self.folder = Path(folder).resolve()
        found: dict[str, str] = {}
        for spelling in [str(folder), str(self.folder), *[p for p in paths if is_local_path(p)]]:
            public = self.path(spelling)
            for key in {spelling, spelling.rstrip("/"), str(Path(spelling).expanduser().resolve())}:
                if key and key not in (".", "/"):
                    found[key] = public
        self.known = sorted(found.items(), key=lambda item: -len(item[0]))  # the longest spelling first

    def path(self, value: str) -> str:
        """One local path as published: `.`, relative to the folder, or its name."""
        resolved = Path(value).expanduser().resolve()
        if resolved == self.folder:
            return "."
        if self.folder in resolved.parents:
            return resolved.relative_to(self.folder).as_posix()
        return resolved.name or value

    def text(self, text: str) -> str:
        """A string with every local path in it rewritten."""
        if is_local_path(text):
            return self.path(text)
        for spelling, public in self.known:
            text = text.replace(spelling, public)
        return ABSOLUTE_PATH.sub(lambda match: Path(match.group(0)).name or match.group(0), text)

    def json(self, value):
        """A JSON-like value (dicts, lists, strings, numbers) with every string rewritten (`text`)."""
        if isinstance(value, dict):
            return {key: self.json(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.json(item) for item in value]
        return self.text(value) if isinstance(value, str) else value
