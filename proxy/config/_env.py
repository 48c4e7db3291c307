"""`${VAR}` / `${VAR:-default}` interpolation of scalar strings; `$${` is a literal `${`."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["InterpolationError", "Protected", "interpolate", "protect"]

# One pass over the text, left to right. The alternatives, in order: an escaped `$${`, a
# well-formed reference, and any other `${` (an error: we never leave a half-parsed
# reference in place, it would be sent upstream as is).
_TOKEN = re.compile(
    r"\$\$\{"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<default>:-[^}]*)?\}"
    r"|\$\{"
)


class InterpolationError(ValueError):
    """A reference that cannot be resolved; the message names the variable, never a value."""


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, bool]:
    """Return (text with references replaced, whether any reference was replaced).

    `${VAR:-default}` uses the default when VAR is unset or empty (as the shell does);
    `${VAR}` with VAR unset is an error. Defaults are taken literally (no nesting).
    """
    if "$" not in text:
        return text, False
    out: list[str] = []
    pos = 0
    used = False
    for m in _TOKEN.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token == "$${":
            out.append("${")
            continue
        name = m.group("name")
        if name is None:
            raise InterpolationError(
                "malformed '${' reference: write ${NAME} or ${NAME:-default} "
                "(NAME: letters, digits, underscore), or '$${' for a literal '${'"
            )
        used = True
        default = m.group("default")
        value = env.get(name)
        if default is not None:
            out.append(value if value else default[2:])
        elif value is None:
            raise InterpolationError(
                f"environment variable {name} is not set; set it, or write "
                f"${{{name}:-}} (empty when unset) or ${{{name}:-default}}"
            )
        else:
            out.append(value)
    out.append(text[pos:])
    return "".join(out), used


# --------------------------------------------------------------------------- flow-style YAML
#
# In YAML's flow style (`{kind: openai, api_key: ${OPENAI_API_KEY}}`, as DESIGN.md writes it)
# `{` and `}` are syntax, so an unquoted reference does not parse. Before parsing, each
# reference is swapped for a same-length run of private-use characters (a plain scalar in
# any context; same length, so every line/column stays right), and swapped back in the
# scalars afterwards, where it is interpolated as usual. No quote, backslash or newline may
# be inside a reference, so quoted scalars read exactly as if nothing had been swapped.

_REF = re.compile(r"\$\$?\{[^{}\n\\\"']*\}")
_MARK = "\ue000"
_PAD = "\ue001"
_FIRST_INDEX = 0xE100
_LAST_INDEX = 0xF8FF
_PLACEHOLDER = re.compile("\ue000([\ue100-\uf8ff])\ue001*")
_PRIVATE = re.compile("[\ue000-\uf8ff]")


class Protected:
    """Text with its references swapped out, and the way back."""

    def __init__(self, text: str) -> None:
        self.refs: list[str] = []
        if "${" not in text and "$${" not in text:
            self.text = text
            return
        if _PRIVATE.search(text):  # cannot swap safely; parse as written
            self.text = text
            return

        def swap(m: re.Match[str]) -> str:
            index = len(self.refs)
            if _FIRST_INDEX + index > _LAST_INDEX:
                return m.group(0)
            self.refs.append(m.group(0))
            return _MARK + chr(_FIRST_INDEX + index) + _PAD * (len(m.group(0)) - 2)

        self.text = _REF.sub(swap, text)

    def restore(self, value: str) -> str:
        if not self.refs or _MARK not in value:
            return value
        return _PLACEHOLDER.sub(lambda m: self.refs[ord(m.group(1)) - _FIRST_INDEX], value)


def protect(text: str) -> Protected:
    return Protected(text)
