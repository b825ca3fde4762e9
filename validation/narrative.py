"""The XHTML of a Narrative (R4 §2.4 Narrative, invariants txt-1 and txt-2): a ``div`` in the XHTML namespace, well
formed, with only basic HTML (no active content: scripts, forms, objects, frames, event attributes) and some text
or an image. The reference validator reports each of these as an error."""

from __future__ import annotations

import xml.etree.ElementTree as ET

XHTML = "{http://www.w3.org/1999/xhtml}"
# Elements the specification allows (R4 Narrative: "basic html formatting elements"), beside which nothing is.
ALLOWED = frozenset(
    "a abbr acronym b big blockquote br caption cite code col colgroup dd dfn div dl dt em h1 h2 h3 h4 h5 h6 hr i img "
    "li ol p pre q samp small span strong sub sup table tbody td tfoot th thead tr tt ul var".split()
)


def problems(div: str) -> list[str]:
    if "<!DOCTYPE" in div or "<!ENTITY" in div:
        return ["txt-1: The narrative must not declare a DTD or entities"]
    try:
        root = ET.fromstring(div)  # noqa: S314 - see the import
    except ET.ParseError as exc:
        return [f"txt-1: The narrative is not well-formed XHTML: {exc}"]
    out = []
    if root.tag != f"{XHTML}div":
        out.append("txt-1: The narrative's root must be a div in the XHTML namespace (http://www.w3.org/1999/xhtml)")
    for element in root.iter():
        name = element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""
        if name and name not in ALLOWED:
            out.append(f"txt-1: The narrative contains the element '{name}', which is not allowed")
        for attribute in element.attrib:
            local = attribute.rsplit("}", 1)[-1].lower()
            if local.startswith("on"):
                out.append(f"txt-1: The narrative contains the event attribute '{local}', which is not allowed")
        href = element.attrib.get("href", "")
        if href.strip().lower().startswith("javascript:"):
            out.append("txt-1: The narrative contains a javascript: link, which is not allowed")
    text = "".join(root.itertext()).strip()
    if not text and root.find(f".//{XHTML}img") is None:
        out.append("txt-2: The narrative SHALL have some non-whitespace content")
    return out
