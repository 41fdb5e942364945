"""Request bodies in every accepted format, responses as negotiated, and the one error body."""

from __future__ import annotations

import io
import json
import uuid

import defusedxml.ElementTree
import pytest
from helpers import count

JSON = "application/json"
XML = "application/xml"
TEXT_XML = "text/xml"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

DOC_FIELDS = {
    "uuid": "string",
    "accuracy": 0,
    "precission": 0,
    "mae": 0,
    "rmse": 0,
    "binaryPath": "string",
    "version": "string",
    "meta": "string",
}
# The documented body, byte for byte as the documentation's snippets send it.
DOC_JSON = (
    '{"uuid":"string","accuracy":0,"precission":0,"mae":0,"rmse":0,'
    '"binaryPath":"string","version":"string","meta":"string"}'
)
DOC_XML = (
    '<?xml version="1.0" encoding="utf-8"?><item><uuid>string</uuid><accuracy>0</accuracy>'
    "<precission>0</precission><mae>0</mae><rmse>0</rmse><binaryPath>string</binaryPath>"
    "<version>string</version><meta>string</meta></item>"
)
DEEP = 100_000


def post(client, headers, data, content_type=None, **extra):
    return client.post(
        "/trainings", data=data, content_type=content_type, headers={**headers, **extra}
    )


def assert_error(response, code: int) -> None:
    """The documented error body, as JSON, never an HTML page."""
    assert response.status_code == code
    assert response.mimetype == JSON
    body = response.json
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    assert "<html" not in response.get_data(as_text=True).lower()


def assert_documented_training(body) -> None:
    assert body["uuid"] == "string"
    assert body["binaryPath"] == "string"
    assert body["version"] == "string"
    assert body["meta"] == "string"


def xml_of(response):
    return defusedxml.ElementTree.fromstring(response.get_data())


# Accepted bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        JSON,
        "application/json; charset=utf-8",
        # What the documentation's curl, Node, Python and PHP snippets send.
        FORM,
        "application/x-www-form-urlencoded; charset=UTF-8",
    ],
)
def test_documented_json_body_creates_a_training(client, auth, content_type):
    response = post(client, auth, DOC_JSON, content_type)

    assert response.status_code == 200
    assert_documented_training(response.json)
    assert count(client, auth) == 1
    listed = client.get("/trainings", headers=auth).json
    assert [t["uuid"] for t in listed] == ["string"]


@pytest.mark.parametrize("content_type", [XML, TEXT_XML, "application/xml; charset=utf-8"])
def test_documented_xml_body_creates_a_training(client, auth, content_type):
    response = post(client, auth, DOC_XML, content_type)

    assert response.status_code == 200
    assert_documented_training(response.json)
    assert count(client, auth) == 1


def test_form_fields_create_a_training(client, auth):
    response = post(client, auth, "uuid=form-1&version=v%202&meta=a+b", FORM)

    assert response.status_code == 200
    assert response.json["uuid"] == "form-1"
    assert response.json["version"] == "v 2"
    assert response.json["meta"] == "a b"
    assert client.get("/trainings", headers=auth).json[0]["uuid"] == "form-1"


def test_multipart_fields_create_a_training(client, auth):
    fields = {"uuid": "multi-1", "version": "3", "meta": "hello"}
    response = post(client, auth, fields, MULTIPART)

    assert response.status_code == 200
    assert response.json["uuid"] == "multi-1"
    assert response.json["version"] == "3"
    assert client.get("/trainings", headers=auth).json[0]["meta"] == "hello"


@pytest.mark.parametrize("content_type", [JSON, XML, TEXT_XML, FORM, MULTIPART, None])
def test_empty_body_creates_a_training_with_a_server_generated_uuid(client, auth, content_type):
    response = post(client, auth, b"", content_type)

    assert response.status_code == 200
    generated = response.json["uuid"]
    assert uuid.UUID(generated)
    assert client.get("/trainings", headers=auth).json[0]["uuid"] == generated


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/octet-stream", "text/html", "text/csv", None]
)
def test_unsupported_content_type_is_415_and_stores_nothing(client, auth, content_type):
    response = post(client, auth, DOC_JSON, content_type)

    assert_error(response, 415)
    assert count(client, auth) == 0


# Rejected bodies ---------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE item [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<item><meta>&lol3;</meta></item>"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE item [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<item><meta>&xxe;</meta></item>"""
EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE item SYSTEM "http://127.0.0.1:9/evil.dtd">
<item><meta>x</meta></item>"""
PARAMETER_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE item [
  <!ENTITY % remote SYSTEM "file:///etc/passwd">
  %remote;
]>
<item><meta>x</meta></item>"""
INTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE item [<!ENTITY name "value">]>
<item><meta>&name;</meta></item>"""


@pytest.mark.parametrize(
    "body",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY, INTERNAL_ENTITY],
    ids=["billion-laughs", "external-entity", "external-dtd", "parameter-entity", "entity"],
)
@pytest.mark.parametrize("content_type", [XML, TEXT_XML])
def test_xml_with_dtd_or_entities_is_400_and_stores_nothing(client, auth, content_type, body):
    response = post(client, auth, body, content_type)

    assert_error(response, 400)
    assert "root:" not in response.get_data(as_text=True)
    assert count(client, auth) == 0


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param(JSON, '{"uuid": "x"', id="json-truncated"),
        pytest.param(JSON, "{uuid: 'x'}", id="json-not-json"),
        pytest.param(JSON, "[]", id="json-array"),
        pytest.param(JSON, '[{"uuid": "x"}]', id="json-array-of-object"),
        pytest.param(JSON, '"uuid"', id="json-string"),
        pytest.param(JSON, "1", id="json-number"),
        pytest.param(JSON, "null", id="json-null"),
        pytest.param(JSON, "true", id="json-bool"),
        pytest.param(JSON, '{"a":' * DEEP + "1" + "}" * DEEP, id="json-nested-deep-objects"),
        pytest.param(JSON, "[" * DEEP + "]" * DEEP, id="json-nested-deep-arrays"),
        pytest.param(JSON, '{"accuracy": NaN}', id="json-nan"),
        pytest.param(JSON, '{"mae": Infinity}', id="json-infinity"),
        pytest.param(JSON, '{"rmse": -Infinity}', id="json-minus-infinity"),
        pytest.param(JSON, '{"meta": {"a": NaN}}', id="json-nan-in-meta"),
        pytest.param(JSON, b'{"uuid": "\xff\xfe"}', id="json-invalid-utf8"),
        pytest.param(JSON, '{"version": ' + "9" * 5000 + "}", id="json-huge-integer"),
        pytest.param(FORM, '{"uuid": "x"', id="form-labelled-json-truncated"),
        pytest.param(FORM, '{"accuracy": NaN}', id="form-labelled-json-nan"),
        pytest.param(FORM, b'{"uuid": "\xff"}', id="form-labelled-json-invalid-utf8"),
        pytest.param(FORM, b"uuid=\xff\xfe", id="form-invalid-utf8"),
        pytest.param(FORM, "uuid=%FF%FE", id="form-invalid-utf8-escaped"),
        pytest.param(FORM, "uuid=a&uuid=b", id="form-field-twice"),
        pytest.param(XML, "<item><uuid>x</item>", id="xml-malformed"),
        pytest.param(XML, "not xml at all", id="xml-not-xml"),
        pytest.param(XML, "<items><item><uuid>x</uuid></item></items>", id="xml-root-items"),
        pytest.param(XML, "<training><uuid>x</uuid></training>", id="xml-root-other"),
        pytest.param(XML, '<item xmlns="urn:x"><uuid>x</uuid></item>', id="xml-root-namespaced"),
        pytest.param(XML, "<item><uuid>a</uuid><uuid>b</uuid></item>", id="xml-field-twice"),
        pytest.param(XML, "<item><meta><a>1</a></meta></item>", id="xml-nested-field"),
        pytest.param(XML, b"<item><uuid>\xff\xfe</uuid></item>", id="xml-invalid-utf8"),
        pytest.param(TEXT_XML, "<item><uuid>x</uuid>", id="text-xml-malformed"),
    ],
)
def test_unreadable_body_is_400_and_stores_nothing(client, auth, content_type, body):
    response = post(client, auth, body, content_type)

    assert_error(response, 400)
    assert count(client, auth) == 0


def test_multipart_field_given_twice_is_400_and_stores_nothing(client, auth):
    response = post(client, auth, {"uuid": ["a", "b"]}, MULTIPART)

    assert_error(response, 400)
    assert count(client, auth) == 0


def test_multipart_with_a_file_is_400_and_stores_nothing(client, auth):
    fields = {"uuid": "with-file", "model": (io.BytesIO(b"\x00weights"), "model.bin")}
    response = post(client, auth, fields, MULTIPART)

    assert_error(response, 400)
    assert count(client, auth) == 0


def test_multipart_with_invalid_utf8_is_400_and_stores_nothing(client, auth):
    body = b'--B\r\nContent-Disposition: form-data; name="uuid"\r\n\r\n\xff\xfe\r\n--B--\r\n'
    response = post(client, auth, body, "multipart/form-data; boundary=B")

    assert_error(response, 400)
    assert count(client, auth) == 0


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param(MULTIPART, b"not a multipart body", id="no-boundary"),
        pytest.param(
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="uuid"\r\n\r\nab',
            id="truncated",
        ),
    ],
)
def test_malformed_multipart_is_400_and_stores_nothing(client, auth, content_type, body):
    response = post(client, auth, body, content_type)

    assert_error(response, 400)
    assert count(client, auth) == 0


def test_number_that_overflows_to_infinity_in_meta_is_400(client, auth):
    # 1e999 is valid JSON text that Python reads as infinity; kept, meta would say "Infinity".
    response = post(client, auth, '{"meta": {"a": 1e999}}', JSON)

    assert_error(response, 400)
    assert count(client, auth) == 0


def test_invalid_field_is_400_with_errors_by_field(client, auth):
    response = post(client, auth, '{"uuid": "x", "accuracy": 2, "colour": "red"}', JSON)

    assert_error(response, 400)
    errors = response.json["errors"]
    assert set(errors) == {"accuracy", "colour"}
    assert all(isinstance(m, str) for messages in errors.values() for m in messages)
    assert count(client, auth) == 0


# Body size ---------------------------------------------------------------------------------


OVER_LIMIT = "x" * (1024 * 1024 + 1)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param(JSON, json.dumps({"meta": OVER_LIMIT}), id="json"),
        pytest.param(XML, f"<item><meta>{OVER_LIMIT}</meta></item>", id="xml"),
        pytest.param(FORM, json.dumps({"meta": OVER_LIMIT}), id="form-labelled-json"),
        pytest.param(FORM, f"meta={OVER_LIMIT}", id="form"),
    ],
)
def test_body_over_max_content_length_is_413_and_stores_nothing(client, auth, content_type, body):
    response = post(client, auth, body, content_type)

    assert_error(response, 413)
    assert count(client, auth) == 0


def test_multipart_body_over_max_content_length_is_413_and_stores_nothing(client, auth):
    response = post(client, auth, {"meta": OVER_LIMIT}, MULTIPART)

    assert_error(response, 413)
    assert count(client, auth) == 0


def test_max_content_length_setting_is_the_limit(app, client, auth):
    app.config["MAX_CONTENT_LENGTH"] = len(DOC_JSON) - 1

    response = post(client, auth, DOC_JSON, JSON)

    assert_error(response, 413)
    assert count(client, auth) == 0


# Responses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "*/*", JSON, "application/*", "application/json, */*"])
def test_response_is_json_by_default(client, auth, accept):
    headers = {**auth, "Accept": accept} if accept else auth
    response = post(client, headers, DOC_JSON, JSON)

    assert response.status_code == 200
    assert response.mimetype == JSON
    assert_documented_training(json.loads(response.get_data()))


@pytest.mark.parametrize(
    ("accept", "mimetype"),
    [
        (XML, XML),
        (TEXT_XML, TEXT_XML),
        ("application/json;q=0.5, application/xml", XML),
        ("text/html, text/xml;q=0.9", TEXT_XML),
    ],
)
def test_one_training_is_an_item_element_when_xml_is_preferred(client, auth, accept, mimetype):
    response = post(client, auth, DOC_JSON, JSON, Accept=accept)

    assert response.status_code == 200
    assert response.mimetype == mimetype
    root = xml_of(response)
    assert root.tag == "item"
    assert root.findtext("uuid") == "string"
    assert root.findtext("binaryPath") == "string"
    assert root.findtext("created_by") == "writer"
    assert count(client, auth) == 1


def test_list_is_items_of_item_elements_in_xml(client, auth):
    for name in ("first", "second"):
        assert post(client, auth, f"uuid={name}", FORM).status_code == 200

    response = client.get("/trainings", headers={**auth, "Accept": XML})

    assert response.status_code == 200
    assert response.mimetype == XML
    root = xml_of(response)
    assert root.tag == "items"
    assert [child.tag for child in root] == ["item", "item"]
    assert [child.findtext("uuid") for child in root] == ["first", "second"]


def test_empty_list_is_an_empty_items_element_in_xml(client, auth):
    response = client.get("/trainings", headers={**auth, "Accept": XML})

    assert response.status_code == 200
    root = xml_of(response)
    assert root.tag == "items"
    assert len(root) == 0


def test_error_is_an_error_element_in_xml(client, auth):
    response = client.get("/trainings/999", headers={**auth, "Accept": XML})

    assert response.status_code == 404
    assert response.mimetype == XML
    root = xml_of(response)
    assert root.tag == "error"
    assert root.findtext("code") == "404"
    assert root.findtext("message")


def test_validation_error_in_xml_lists_the_fields(client, auth):
    response = post(client, auth, "<item><accuracy>7</accuracy></item>", XML, Accept=XML)

    assert response.status_code == 400
    root = xml_of(response)
    assert root.tag == "error"
    assert root.findtext("code") == "400"
    assert root.find("errors/accuracy") is not None
    assert count(client, auth) == 0


@pytest.mark.parametrize("field", ["meta", "version", "binaryPath"])
def test_text_that_xml_cannot_carry_is_400_and_stores_nothing(client, auth, field):
    response = post(client, auth, json.dumps({field: "a\u0001b"}), JSON)

    assert_error(response, 400)
    assert field in response.json["errors"]
    assert count(client, auth) == 0


def test_xml_error_echoing_a_client_field_name_is_well_formed(client, auth):
    # The unknown field's name comes back in `errors`, control character and all.
    response = post(client, auth, '{"bad\u0001 name": 1}', JSON, Accept=XML)

    assert response.status_code == 400
    root = xml_of(response)  # raises ParseError if the document is not well-formed XML
    assert root.tag == "error"
    assert root.findtext("code") == "400"


@pytest.mark.parametrize("accept", ["text/html", "image/png", "application/json;q=0"])
def test_read_with_no_acceptable_type_is_406_in_json(client, auth, accept):
    response = client.get("/trainings", headers={**auth, "Accept": accept})

    assert_error(response, 406)


def test_create_with_no_acceptable_type_is_406_and_stores_nothing(client, auth):
    response = post(client, auth, DOC_JSON, JSON, Accept="text/html")

    assert_error(response, 406)
    assert count(client, auth) == 0


def test_update_with_no_acceptable_type_is_406_and_changes_nothing(client, auth):
    training_id = post(client, auth, '{"version": "1"}', JSON).json["id"]

    response = client.put(
        f"/trainings/{training_id}",
        data='{"version": "2"}',
        content_type=JSON,
        headers={**auth, "Accept": "text/html"},
    )

    assert_error(response, 406)
    assert client.get(f"/trainings/{training_id}", headers=auth).json["version"] == "1"


def test_delete_with_no_acceptable_type_is_406_and_deletes_nothing(client, auth):
    training_id = post(client, auth, DOC_JSON, JSON).json["id"]

    response = client.delete(f"/trainings/{training_id}", headers={**auth, "Accept": "text/html"})

    assert_error(response, 406)
    assert client.get(f"/trainings/{training_id}", headers=auth).status_code == 200
    assert count(client, auth) == 1


# Every error is the documented JSON body ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code"),
    [
        pytest.param("get", "/nowhere", {}, 404, id="404-route"),
        pytest.param("get", "/trainings/999", {}, 404, id="404-training"),
        pytest.param("get", "/trainings/not-a-number", {}, 404, id="404-bad-id"),
        pytest.param("patch", "/trainings", {}, 405, id="405-patch-list"),
        pytest.param("delete", "/trainings", {}, 405, id="405-delete-list"),
        pytest.param("post", "/trainings/1", {}, 405, id="405-post-item"),
        pytest.param("get", "/trainings", {"headers": {"Accept": "text/html"}}, 406, id="406"),
        pytest.param("post", "/trainings", {"data": OVER_LIMIT, "content_type": JSON}, 413),
        pytest.param("post", "/trainings", {"data": "x", "content_type": "text/plain"}, 415),
        pytest.param("post", "/trainings", {"data": "{", "content_type": JSON}, 400),
        pytest.param("get", "/trainings", {"query_string": {"colour": "red"}}, 400, id="400-q"),
    ],
)
def test_errors_have_the_documented_json_body(client, auth, method, path, kwargs, code):
    kwargs = dict(kwargs)
    headers = {**auth, **kwargs.pop("headers", {})}
    response = client.open(path, method=method.upper(), headers=headers, **kwargs)

    assert_error(response, code)
    assert set(response.json) <= {"code", "message", "errors"}
    assert count(client, auth) == 0


def test_405_says_which_methods_are_allowed(client, auth):
    response = client.patch("/trainings", headers=auth)

    assert_error(response, 405)
    assert {"GET", "POST"} <= set(response.headers["Allow"].replace(" ", "").split(","))


def test_403_has_the_documented_json_body(client):
    response = client.get("/trainings", headers={"Accept": "text/html"})

    assert_error(response, 403)
    assert response.json["message"] == "this operation requires authentication"


def test_uuid_reused_with_different_fields_is_409_and_keeps_the_first(client, auth):
    assert post(client, auth, '{"uuid": "dup", "version": "1"}', JSON).status_code == 200

    response = post(client, auth, '{"uuid": "dup", "version": "2"}', JSON)

    assert_error(response, 409)
    assert count(client, auth) == 1
    assert client.get("/trainings", headers=auth).json[0]["version"] == "1"
