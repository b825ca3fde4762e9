"""UCUM syntax of a unit code (the grammar of https://ucum.org/ucum §2, "Syntax rules"; V: UCUM 2.1).

Only the syntax: whether each atom is a defined UCUM unit needs the UCUM tables, which kapfhir does not hold (the
one PyPI package that does, ucumate, needs a Java runtime). The grammar:
    main-term   ::= "/" term | term
    term        ::= term "." component | term "/" component | component
    component   ::= annotatable annotation | annotatable | annotation | factor | "(" term ")"
    annotatable ::= simple-unit exponent | simple-unit
    exponent    ::= sign digits | digits
    annotation  ::= "{" ANNOTATION-STRING "}"
Atoms are printable ASCII (33-126) other than ( ) . / { }, with [...] groups (mm[Hg], [lb_av]).
"""

from __future__ import annotations

import re

_EXPONENT = re.compile(r"(.*?[^0-9+\-])([+-]?[0-9]+)")


def syntax_error(code: str) -> str | None:
    """Why ``code`` is not a UCUM expression, or None when its syntax is right."""
    if not code:
        return "empty"
    parser = _Parser(code)
    try:
        if parser.peek() == "/":
            parser.pos += 1
        parser.term()
        if parser.pos != len(code):
            raise ValueError(f"unexpected '{code[parser.pos]}' at {parser.pos + 1}")
    except ValueError as exc:
        return str(exc)
    return None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def term(self) -> None:
        self.component()
        while self.peek() in (".", "/") and self.peek():
            self.pos += 1
            self.component()

    def component(self) -> None:
        char = self.peek()
        if char == "(":
            self.group()
        elif char == "{":
            self.annotation()
        else:
            self.simple_unit()
            if self.peek() == "{":
                self.annotation()

    def group(self) -> None:
        self.pos += 1
        self.term()
        if self.peek() != ")":
            raise ValueError("missing ')'")
        self.pos += 1

    def simple_unit(self) -> None:
        """An atom (with its [...] groups) and its exponent, or a factor."""
        start = self.pos
        while self.peek() and self.peek() not in "()./{}":
            if self.peek() == "[":
                end = self.text.find("]", self.pos)
                if end < 0:
                    raise ValueError("missing ']'")
                self.pos = end + 1
                continue
            if not 33 <= ord(self.peek()) <= 126 or self.peek() == "]":
                raise ValueError(f"character '{self.peek()}' is not allowed at {self.pos + 1}")
            self.pos += 1
        symbol = self.text[start : self.pos]
        if not symbol:
            raise ValueError(f"a unit is missing at {self.pos + 1}")
        if not symbol.isdigit():
            match = _EXPONENT.fullmatch(symbol)
            atom = match.group(1) if match else symbol
            if atom.lstrip("+-").isdigit() or atom[:1] in "+-":
                raise ValueError(f"'{symbol}' is not a unit")

    def annotation(self) -> None:
        end = self.text.find("}", self.pos)
        if end < 0:
            raise ValueError("missing '}'")
        inner = self.text[self.pos + 1 : end]
        if "{" in inner or any(not 32 <= ord(c) <= 126 for c in inner):
            raise ValueError("an annotation holds printable characters other than braces")
        self.pos = end + 1
