"""Request bodies in (JSON, XML, forms) and responses out (JSON or XML), chosen by the headers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree
from defusedxml import DefusedXmlException
from flask import Request, Response, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from .errors import MalformedBody, NotAcceptable, UnsupportedMediaType

JSON = "application/json"
XML = "application/xml"
# Offered by the few resources that also have a page (a training's report).
HTML = "text/html"
TEXT_XML = "text/xml"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
ACCEPTED_BODY_TYPES = (JSON, XML, TEXT_XML, FORM, MULTIPART)
OFFERED_TYPES = (JSON, XML, TEXT_XML)

XML_ROOT = "item"
XML_LIST_ROOT = "items"
# Valid XML element names; anything else is written as <entry key="...">.
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Characters XML 1.0 cannot carry at all, not even escaped.
NOT_XML_CHARACTERS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def parse_body(req: Request | None = None) -> dict[str, Any]:
    """The request body as a flat mapping of field names to values, whatever its format."""
    req = req or request
    mimetype = req.mimetype
    data = req.get_data(cache=True)
    if not data.strip():
        return {}
    if mimetype == MULTIPART:
        return _from_multipart(data, req.mimetype_params.get("boundary", ""))
    if mimetype == JSON or mimetype.endswith("+json"):
        return _from_json(data)
    if mimetype in (XML, TEXT_XML) or mimetype.endswith("+xml"):
        return _from_xml(data)
    if mimetype == FORM:
        # The original API documentation's snippets send JSON text labelled as a form.
        if data.lstrip().startswith(b"{"):
            return _from_json(data)
        return _from_form(data)
    shown = mimetype or "no Content-Type"
    raise UnsupportedMediaType(
        f"{shown} is not supported; send one of {', '.join(ACCEPTED_BODY_TYPES)}"
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def decode_json(data: bytes) -> Any:
    """A JSON body's value; MalformedBody says what is wrong (NaN and Infinity included)."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise MalformedBody("the JSON body is not valid UTF-8") from None
    except RecursionError:
        raise MalformedBody("the JSON body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers too long to convert
        raise MalformedBody(f"the JSON body is malformed: {exc}") from None


def _from_json(data: bytes) -> dict[str, Any]:
    value = decode_json(data)
    if not isinstance(value, dict):
        raise MalformedBody("the JSON body must be an object")
    return value


def _from_xml(data: bytes) -> dict[str, Any]:
    try:
        root = defusedxml.ElementTree.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException:
        raise MalformedBody(
            "the XML body may not contain a DTD, entities or external references"
        ) from None
    except (SyntaxError, ValueError):  # ParseError is a SyntaxError
        raise MalformedBody("the XML body is malformed") from None
    if root.tag != XML_ROOT:
        raise MalformedBody(f"the XML body's root element must be <{XML_ROOT}>")
    fields: dict[str, Any] = {}
    for child in root:
        if not isinstance(child.tag, str) or not _XML_NAME.match(child.tag):
            raise MalformedBody("the XML body may only contain plain field elements")
        if len(child):
            raise MalformedBody(f"<{child.tag}> must contain text, not elements")
        if child.tag in fields:
            raise MalformedBody(f"<{child.tag}> is given more than once")
        fields[child.tag] = child.text if child.text is not None else None
    return fields


def _single_values(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key in fields:
            raise MalformedBody(f"the field {key!r} is given more than once")
        fields[key] = value
    return fields


def _from_form(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=1000)
    except UnicodeDecodeError:
        raise MalformedBody("the form body is not valid UTF-8") from None
    except ValueError:
        raise MalformedBody("the form body has too many fields") from None
    return _single_values(pairs)


def _from_multipart(data: bytes, boundary: str) -> dict[str, Any]:
    # Werkzeug's form parser forgives truncated bodies and undecodable text; this one may not.
    if not boundary:
        raise MalformedBody("the multipart body has no boundary parameter")
    decoder = MultipartDecoder(boundary.encode("latin-1"), max_parts=1000)
    decoder.receive_data(data)
    decoder.receive_data(None)
    pairs: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    name = ""
    try:
        while not isinstance(event := decoder.next_event(), Epilogue):
            if isinstance(event, File):
                raise MalformedBody("file uploads are not accepted; send fields only")
            if isinstance(event, Field):
                name, chunks = event.name, []
            elif isinstance(event, Data):
                chunks.append(event.data)
                if not event.more_data:
                    pairs.append((name, b"".join(chunks).decode("utf-8")))
            elif isinstance(event, NeedData):  # although everything was given: cut short
                raise MalformedBody("the multipart body is truncated")
    except UnicodeDecodeError:
        raise MalformedBody("the multipart body is not valid UTF-8") from None
    except (ValueError, RequestEntityTooLarge):
        raise MalformedBody("the multipart body is malformed") from None
    return _single_values(pairs)


# Rendering -------------------------------------------------------------------------------


def negotiate(req: Request | None = None, offered: Sequence[str] = OFFERED_TYPES) -> str:
    """The response type the client prefers among those offered; NotAcceptable (406) if none."""
    req = req or request
    if not req.accept_mimetypes:
        return offered[0]
    best = req.accept_mimetypes.best_match(offered)
    if best is None:
        raise NotAcceptable(f"responses are available as {', '.join(offered)}")
    return best


def render(
    payload: Any,
    status: int = 200,
    *,
    root: str = XML_ROOT,
    mimetype: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``payload`` as JSON or XML, as the request's Accept header prefers."""
    mimetype = mimetype or negotiate()
    if mimetype == JSON:
        # ASCII escapes keep any text a client managed to send (a lone surrogate) encodable.
        body = json.dumps(payload, separators=(",", ":"))
    else:
        element = Element(XML_LIST_ROOT if isinstance(payload, list) else root)
        _fill_xml(element, payload)
        body = tostring(element, encoding="unicode", xml_declaration=True)
    response = Response(body, status=status, mimetype=mimetype, headers=headers)
    response.vary.add("Accept")
    return response


def _fill_xml(element: Element, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            key = str(key)
            if _XML_NAME.match(key):
                child = SubElement(element, key)
            else:
                child = SubElement(element, "entry", key=_xml_text(key))
            _fill_xml(child, item)
    elif isinstance(value, list):
        for item in value:
            _fill_xml(SubElement(element, XML_ROOT), item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = _xml_text(str(value))


def _xml_text(text: str) -> str:
    """``text`` with what XML cannot carry (stored before it was refused, or echoed) replaced."""
    return NOT_XML_CHARACTERS.sub("\ufffd", text)
