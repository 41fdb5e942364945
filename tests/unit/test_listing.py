"""Listing and counting trainings: GET /trainings and /trainings/count, Strapi v3 style."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from helpers import count, create, set_columns

FUTURE = "2999-01-01T00:00:00.000Z"
LATER = "3000-01-01T00:00:00.000Z"


def listing(client, auth, params=None):
    response = client.get("/trainings", query_string=params, headers=auth)
    assert response.status_code == 200, response.json
    assert response.mimetype == "application/json"
    assert isinstance(response.json, list)
    return response.json


def ids(client, auth, params=None):
    return [int(training["id"]) for training in listing(client, auth, params)]


def at(second):
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)


@pytest.fixture
def rows(app, client, auth):
    """Four trainings with a spread of values (ids 1 to 4, created_at 10s, 20s, 30s, 40s).

    ====  =======  =======  ================  ==========  ========  ========  ========
    id    uuid     version  meta              status      attempts  accuracy  sched.
    ====  =======  =======  ================  ==========  ========  ========  ========
    1     Alpha-1  1.0      Hello World       scheduled   0         null      FUTURE
    2     alpha-2  2.0      hello 100%        queued      1         0.5       null
    3     beta_3   3.0      under_score       succeeded   2         0.9       LATER
    4     beta-4   null     null              failed      3         null      null
    ====  =======  =======  ================  ==========  ========  ========  ========
    """
    create(client, auth, uuid="Alpha-1", version="1.0", meta="Hello World", scheduled_at=FUTURE)
    create(client, auth, uuid="alpha-2", version="2.0", meta="hello 100%")
    create(client, auth, uuid="beta_3", version="3.0", meta="under_score", scheduled_at=LATER)
    create(client, auth, uuid="beta-4")
    set_columns(app, 1, created_at=at(10))
    set_columns(app, 2, created_at=at(20), attempts=1, accuracy=0.5)
    set_columns(app, 3, created_at=at(30), attempts=2, accuracy=0.9, status="succeeded")
    set_columns(app, 4, created_at=at(40), attempts=3, status="failed", error="boom")


# Paging ------------------------------------------------------------------------------------


def test_an_empty_list_is_an_empty_json_array(client, auth):
    assert listing(client, auth) == []
    assert count(client, auth) == 0


def test_the_list_holds_the_same_representations_as_get(client, auth):
    first = create(client, auth, uuid="a", meta="m")
    second = create(client, auth, uuid="b", scheduled_at=FUTURE)

    assert listing(client, auth) == [first, second]


@pytest.fixture
def many(client, auth):
    for number in range(105):
        create(client, auth, uuid=f"run-{number}")


def test_the_default_limit_is_100(client, auth, many):
    assert ids(client, auth) == list(range(1, 101))
    assert count(client, auth) == 105


def test_limit_minus_one_returns_everything(client, auth, many):
    assert ids(client, auth, {"_limit": "-1"}) == list(range(1, 106))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"_limit": "0"}, []),
        ({"_limit": "2"}, [1, 2]),
        ({"_limit": "99"}, [1, 2, 3, 4, 5]),
        ({"_start": "0"}, [1, 2, 3, 4, 5]),
        ({"_start": "3"}, [4, 5]),
        ({"_start": "1", "_limit": "2"}, [2, 3]),
        ({"_start": "5"}, []),
        ({"_start": "1000"}, []),
        ({"_start": "2", "_limit": "-1"}, [3, 4, 5]),
    ],
)
def test_start_and_limit_select_a_page(client, auth, params, expected):
    for number in range(5):
        create(client, auth, uuid=f"run-{number}")

    assert ids(client, auth, params) == expected


@pytest.mark.parametrize(
    "params",
    [
        {"_start": "-1"},
        {"_limit": "-2"},
        {"_limit": "abc"},
        {"_start": "abc"},
        {"_limit": "1.5"},
        {"_start": "2.0"},
        {"_limit": ""},
        {"_limit": str(10**30)},
        {"_start": str(10**30)},
        {"_limit": ["1", "2"]},
    ],
    ids=str,
)
@pytest.mark.parametrize("path", ["/trainings", "/trainings/count"])
def test_invalid_paging_is_rejected_naming_the_parameter(client, auth, path, params):
    response = client.get(path, query_string=params, headers=auth)

    assert response.status_code == 400
    assert response.json["code"] == 400
    assert list(response.json["errors"]) == list(params)


# Sorting -----------------------------------------------------------------------------------


@pytest.fixture
def sortable(client, auth):
    # id: version, meta
    create(client, auth, version="b", meta="1")  # 1
    create(client, auth, version="a", meta="2")  # 2
    create(client, auth, version="c", meta="3")  # 3
    create(client, auth, version="a", meta="4")  # 4


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("version", [2, 4, 1, 3]),
        ("version:ASC", [2, 4, 1, 3]),
        ("version:asc", [2, 4, 1, 3]),
        ("version:DESC", [3, 1, 2, 4]),
        ("version:ASC,meta:DESC", [4, 2, 1, 3]),
        ("version:DESC,meta:DESC", [3, 1, 4, 2]),
        ("version,meta:DESC", [4, 2, 1, 3]),
        ("id:DESC", [4, 3, 2, 1]),
        ("meta:DESC", [4, 3, 2, 1]),
        ("created_at:DESC,id:DESC", [4, 3, 2, 1]),
    ],
)
def test_sort_orders_by_fields_ascending_by_default(client, auth, sortable, sort, expected):
    assert ids(client, auth, {"_sort": sort}) == expected


def test_sort_applies_before_paging(client, auth, sortable):
    assert ids(client, auth, {"_sort": "version:DESC", "_start": "1", "_limit": "2"}) == [1, 2]


@pytest.mark.parametrize(
    "sort", ["color", "color:ASC", "version:UP", "version:ASC,color", "", "Version"]
)
def test_sort_by_an_unknown_field_or_direction_is_rejected(client, auth, sortable, sort):
    response = client.get("/trainings", query_string={"_sort": sort}, headers=auth)

    assert response.status_code == 400
    assert list(response.json["errors"]) == ["_sort"]


# Filters -----------------------------------------------------------------------------------

FILTERS = [
    # equality
    ("version=2.0", [2]),
    ("version_eq=2.0", [2]),
    ("uuid=alpha-1", []),
    ("id=3", [3]),
    ("attempts=0", [1]),
    ("status=queued", [2]),
    ("accuracy=0.5", [2]),
    ("scheduled_at=2999-01-01T00:00:00Z", [1]),
    ("scheduled_at=2999-01-01T01:00:00%2B01:00", [1]),
    ("created_at=2026-01-01T00:00:20.000Z", [2]),
    ("created_by=writer", [1, 2, 3, 4]),
    # not equal, including nulls
    ("version_ne=2.0", [1, 3, 4]),
    ("status_ne=queued", [1, 3, 4]),
    ("accuracy_ne=0.5", [1, 3, 4]),
    ("id_ne=1", [2, 3, 4]),
    # comparisons
    ("id_lt=3", [1, 2]),
    ("id_lte=3", [1, 2, 3]),
    ("id_gt=3", [4]),
    ("id_gte=3", [3, 4]),
    ("attempts_lt=2", [1, 2]),
    ("attempts_gte=2", [3, 4]),
    ("accuracy_gt=0.5", [3]),
    ("accuracy_lte=0.9", [2, 3]),
    ("version_lt=2.0", [1]),
    ("version_gte=2.0", [2, 3]),
    ("created_at_lt=2026-01-01T00:00:20Z", [1]),
    ("created_at_lte=2026-01-01T00:00:20Z", [1, 2]),
    ("created_at_gt=2026-01-01T00:00:20Z", [3, 4]),
    ("created_at_gte=2026-01-01T00:00:20Z", [2, 3, 4]),
    ("created_at_gt=2026-01-01T00:00:25", [3, 4]),
    ("created_at_gt=2026-01-01T01:00:25%2B01:00", [3, 4]),
    ("scheduled_at_gt=2999-06-01T00:00:00Z", [3]),
    ("scheduled_at_lte=2999-06-01T00:00:00Z", [1]),
    # lists
    ("id_in=1&id_in=3", [1, 3]),
    ("id_in=2", [2]),
    ("status_in=queued&status_in=failed", [2, 4]),
    ("version_in=1.0&version_in=9.9", [1]),
    ("version_nin=1.0&version_nin=2.0", [3, 4]),
    ("status_nin=queued&status_nin=scheduled", [3, 4]),
    ("id_nin=1&id_nin=2&id_nin=3", [4]),
    ("accuracy_nin=0.5", [1, 3, 4]),
    # contains: case-insensitive
    ("meta_contains=hello", [1, 2]),
    ("meta_contains=HELLO", [1, 2]),
    ("uuid_contains=ALPHA", [1, 2]),
    ("meta_ncontains=hello", [3, 4]),
    ("status_contains=UE", [2]),
    # containss: case-sensitive
    ("meta_containss=hello", [2]),
    ("meta_containss=Hello", [1]),
    ("uuid_containss=alpha", [2]),
    ("meta_ncontainss=hello", [1, 3, 4]),
    ("meta_ncontainss=Hello", [2, 3, 4]),
    # % and _ are literal characters
    ("meta_contains=%25", [2]),
    ("meta_contains=0%25", [2]),
    ("meta_containss=%25", [2]),
    ("meta_ncontains=%25", [1, 3, 4]),
    ("uuid_contains=a_", [3]),
    ("meta_contains=r_s", [3]),
    ("meta_containss=_", [3]),
    ("meta_ncontainss=_", [1, 2, 4]),
    # null
    ("version_null=true", [4]),
    ("version_null=false", [1, 2, 3]),
    ("scheduled_at_null=true", [2, 4]),
    ("scheduled_at_null=false", [1, 3]),
    ("error_null=false", [4]),
    ("accuracy_null=true", [1, 4]),
    # repeating a parameter: OR
    ("status=queued&status=scheduled", [1, 2]),
    ("version=1.0&version=3.0", [1, 3]),
    ("meta_contains=world&meta_contains=score", [1, 3]),
    ("version_null=true&version_null=false", [1, 2, 3, 4]),
    # different parameters: AND
    ("status=queued&version=2.0", [2]),
    ("status=queued&version=1.0", []),
    ("meta_contains=hello&scheduled_at_null=true", [2]),
    ("uuid_contains=beta&attempts_gt=2", [4]),
    ("id_gte=2&id_lte=3", [2, 3]),
    ("status_in=queued&status_in=scheduled&version_ne=1.0", [2]),
]


@pytest.mark.parametrize(("query", "expected"), FILTERS, ids=[query for query, _ in FILTERS])
def test_filters_select_matching_trainings(client, auth, rows, query, expected):
    assert ids(client, auth, query) == expected


@pytest.mark.parametrize(("query", "expected"), FILTERS, ids=[query for query, _ in FILTERS])
def test_count_applies_the_same_filters(client, auth, rows, query, expected):
    assert count(client, auth, query) == len(expected)


def test_filters_combine_with_sorting_and_paging(client, auth, rows):
    query = "status_in=queued&status_in=scheduled&status_in=failed&_sort=id:DESC&_limit=2"

    assert ids(client, auth, query) == [4, 2]


def test_count_is_a_bare_json_number(client, auth, rows):
    response = client.get("/trainings/count", headers=auth)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_data() == b"4"


def test_count_follows_deletions(client, auth, rows):
    assert client.delete("/trainings/2", headers=auth).status_code == 200

    assert count(client, auth) == 3
    assert count(client, auth, "status=queued") == 0


def test_filtering_by_the_created_at_the_api_shows_finds_the_training(client, auth):
    training = create(client, auth)
    shown = training["created_at"]

    assert ids(client, auth, {"created_at": shown}) == [1]
    assert ids(client, auth, {"created_at_lte": shown}) == [1]
    assert ids(client, auth, {"created_at_gt": shown}) == []


BAD_FILTERS = [
    ("color=red", "color"),
    ("version_like=x", "version_like"),
    ("_where=x", "_where"),
    ("id_gt=abc", "id_gt"),
    ("id=1.5", "id"),
    ("id_in=1&id_in=x", "id_in"),
    (f"id={10**30}", "id"),
    ("attempts_lt=", "attempts_lt"),
    ("created_at_gt=notadate", "created_at_gt"),
    ("scheduled_at=2026-13-01", "scheduled_at"),
    ("status=bogus", "status"),
    ("status_in=queued&status_in=bogus", "status_in"),
    ("status_ne=Queued", "status_ne"),
    ("accuracy_gt=nan", "accuracy_gt"),
    ("accuracy_gt=inf", "accuracy_gt"),
    ("accuracy_gt=1e400", "accuracy_gt"),
    ("accuracy=abc", "accuracy"),
    ("attempts_contains=1", "attempts_contains"),
    ("accuracy_ncontains=1", "accuracy_ncontains"),
    ("created_at_containss=2026", "created_at_containss"),
    ("version_null=maybe", "version_null"),
    ("created_at_gt=9999-12-31T23:59:59-01:00", "created_at_gt"),
]


@pytest.mark.parametrize(("query", "parameter"), BAD_FILTERS, ids=[q for q, _ in BAD_FILTERS])
@pytest.mark.parametrize("path", ["/trainings", "/trainings/count"])
def test_invalid_filters_are_rejected_naming_the_parameter(
    client, auth, rows, path, query, parameter
):
    response = client.get(f"{path}?{query}", headers=auth)

    assert response.status_code == 400
    assert response.json["code"] == 400
    assert parameter in response.json["errors"]


def test_all_invalid_parameters_are_named_at_once(client, auth):
    response = client.get("/trainings?color=red&id_gt=abc&_limit=x", headers=auth)

    assert response.status_code == 400
    assert set(response.json["errors"]) == {"color", "id_gt", "_limit"}


def test_lists_and_single_trainings_show_what_the_output_schema_dumps(app, client, auth):
    # Trainings are rendered by calling TrainingOut's fields directly (for speed); every
    # state a training can be in must come out exactly as marshmallow's own dump of it.
    from maia_trainings import db
    from maia_trainings.models import Training
    from maia_trainings.schemas import training_out

    bare = create(client, auth)
    full = create(client, auth, version="v1", meta='{"x": 1}', binaryPath="a/b.bin")
    finished = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    set_columns(
        app,
        full["id"],
        status="succeeded",
        accuracy=0.9,
        precission=0.8,
        mae=0.1,
        rmse=0.2,
        progress=1.0,
        attempts=2,
        metrics='{"roc_auc": 0.81, "n_test": 200}',
        binary_sha256="ab" * 32,
        binary_size=1234,
        started_at=finished,
        finished_at=finished,
        published_at=finished,
        error="",
    )

    listed = client.get("/trainings?_sort=id:ASC", headers=auth).json
    with app.app_context(), db.database(app).session() as session:
        expected = [
            training_out.dump(session.get(Training, int(training["id"])))
            for training in (bare, full)
        ]
    assert listed == expected
    assert client.get(f"/trainings/{full['id']}", headers=auth).json == expected[1]
    assert listed[1]["metrics"] == {"roc_auc": 0.81, "n_test": 200}
    assert listed[1]["published_at"] == "2026-01-02T03:04:05.678Z"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"id_gt": "99999999999"}, 0),
        ({"id_lt": "99999999999"}, 2),
        ({"id": "99999999999"}, 0),
        ({"id_ne": "99999999999"}, 2),
        ({"id_in": ["99999999999", "1"]}, 1),
        ({"id_gte": "-99999999999"}, 2),
        ({"attempts_gte": "4611686018427387904"}, 0),
    ],
)
def test_integers_beyond_32_bits_filter_alike_on_every_database(client, auth, params, expected):
    # PostgreSQL's id column is 32-bit: a larger value compared with it once failed there (500)
    # where SQLite answered.
    create(client, auth)
    create(client, auth)
    assert count(client, auth, params) == expected


def test_an_id_beyond_32_bits_is_not_found(client, auth):
    for method in ("GET", "PUT", "DELETE"):
        response = client.open("/trainings/99999999999", method=method, json={}, headers=auth)
        assert response.status_code == 404
        assert response.json["code"] == 404


@pytest.mark.parametrize("path", ["/trainings", "/trainings/count", "/schedules"])
def test_a_nul_in_a_text_filter_is_a_400_naming_it(client, auth, path):
    # PostgreSQL refuses NUL in a query's text: it must be the client's 400, not a 500.
    create(client, auth, uuid="a")
    response = client.get(
        path, query_string={"uuid_eq" if path != "/schedules" else "name": "a\x00"}, headers=auth
    )

    assert response.status_code == 400
    assert set(response.get_json()["errors"]) == {"uuid_eq" if path != "/schedules" else "name"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("_start=1&_start=2", "_start"),
        ("_limit=-2", "_limit"),
        ("_limit=abc", "_limit"),
        ("url=x", "url"),
        ("_sort=id", "_sort"),
    ],
)
def test_lists_without_filters_read_paging_as_every_list_does(client, auth, query, field):
    response = client.get(f"/webhooks?{query}", headers=auth)

    assert response.status_code == 400
    assert set(response.get_json()["errors"]) == {field}


def test_lists_without_filters_page(client, auth):
    response = client.get("/webhooks?_start=0&_limit=-1", headers=auth)

    assert response.status_code == 200
    assert response.get_json() == []
