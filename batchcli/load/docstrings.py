"""Descriptions for ``--help``: a constructor's ``Args:`` section, a field's docstring or trailing comment."""

from __future__ import annotations

import ast
import inspect
import io
import re
import textwrap
import tokenize

_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params):\s*$")
_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def args_section(doc: str | None) -> dict[str, str]:
    """Argument name -> description from a Google-style ``Args:`` section; continuation lines are joined."""
    if not doc:
        return {}
    lines = inspect.cleandoc(doc).splitlines()
    found: dict[str, str] = {}
    inside = False
    header_indent = 0
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        if not inside:
            match = _SECTION.match(line)
            if match:
                inside, header_indent, entry_indent, current = True, len(match.group(1)), None, None
            continue
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header_indent:  # the next section, or the end of this one
            inside = bool(_SECTION.match(line))
            continue
        if entry_indent is None:
            entry_indent = indent
        entry = _ENTRY.match(line.strip()) if indent == entry_indent else None
        if entry:
            current = entry.group(1)
            found[current] = entry.group(3).strip()
        elif current is not None:
            found[current] = f"{found[current]} {line.strip()}".strip()
    return {name: plain(text) for name, text in found.items()}


def plain(text: str) -> str:
    """Docstring markup read as plain text: reST's double backticks dropped."""
    return text.replace("``", "")


def class_docs(cls: type) -> dict[str, str]:
    """Field name -> description for the annotated fields in ``cls``'s own body.

    The description is the string literal right after the field (an attribute docstring), or else the
    comment at the end of the field's line. Classes whose source cannot be read give nothing.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return {}
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if node is None:
        return {}
    comments = _line_comments(source)
    docs: dict[str, str] = {}
    body = node.body
    for index, statement in enumerate(body):
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        name = statement.target.id
        following = body[index + 1] if index + 1 < len(body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[name] = plain(" ".join(inspect.cleandoc(following.value.value).split()))
        elif (statement.end_lineno or statement.lineno) in comments:
            docs[name] = plain(comments[statement.end_lineno or statement.lineno])
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Descriptions of every field of ``cls`` and its bases; a subclass's own description wins."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object:
            docs.update(class_docs(klass))
    return docs


def constructor_docs(cls: type) -> dict[str, str]:
    """Argument descriptions from the ``Args:`` section of ``cls``'s docstring or of its ``__init__``'s."""
    docs = args_section(inspect.getdoc(cls) if cls.__doc__ else None)
    init = cls.__dict__.get("__init__")
    docs.update({k: v for k, v in args_section(getattr(init, "__doc__", None)).items() if k not in docs})
    return docs


def _line_comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment that ends that line."""
    comments: dict[int, str] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                text = token.string.lstrip("#").strip()
                if text and not text.startswith(("type:", "noqa", "pragma")):
                    comments[token.start[0]] = text
    except (tokenize.TokenError, IndentationError):
        pass
    return comments
