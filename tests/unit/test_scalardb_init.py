"""The Java .properties reader, what it makes of ScalarDB configurations, the cluster file
``txbackup init --scalardb-config`` writes, and the ``[scalardb]`` rule of the cluster file."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from txbackup import javaprops
from txbackup.cli import main
from txbackup.config import apply_scalardb, load_cluster
from txbackup.errors import UsageError
from txbackup.scalardb import build_cluster_file, parse_jdbc, read_config, string_array, toml_str

# -- the .properties grammar ------------------------------------------------------------------------


def test_separators_comments_and_blanks() -> None:
    props = javaprops.parse(
        "# comment\n! also a comment\n\n  a=1\nb : 2\nc 3\nd\te=4\nf=\ng\n  h   =  spaced value  \n"
    )
    assert props.values == {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": "e=4",  # the first blank ends the key
        "f": "",
        "g": "",
        "h": "spaced value  ",  # trailing blanks are the value's (ScalarDB trims them itself)
    }


def test_escapes_and_continuation_lines() -> None:
    text = (
        "key\\ with\\:colon\\=equals = v\\tal\\nue\\u00e9\\\\\n"
        "long = one,\\\n     two,\\\n\tthree\n"
        "even = ends with a backslash\\\\\n"
        "next = x\n"
        "# a comment line ending in a backslash does not continue\\\n"
        "after = y\r\n"
        "cr = z\rlast = at end\\"
    )
    props = javaprops.parse(text)
    assert props.values["key with:colon=equals"] == "v\tal\nue\u00e9\\"
    assert props.values["long"] == "one,two,three"
    assert props.values["even"] == "ends with a backslash\\"
    assert props.values["next"] == "x"
    assert props.values["after"] == "y"
    assert props.values["cr"] == "z"
    assert props.values["last"] == "at end"
    assert props.lines["long"] == 2


def test_malformed_unicode_escape_and_bounds(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"line 2: malformed \\uxxxx escape"):
        javaprops.parse("a=1\nb=\\u12G4\n", where="p")
    big = tmp_path / "big.properties"
    big.write_bytes(b"a=" + b"x" * (javaprops.MAX_BYTES + 1))
    with pytest.raises(UsageError, match="larger than 1 MiB"):
        javaprops.load(big)
    with pytest.raises(UsageError, match="more than 10000 properties"):
        javaprops.parse("".join(f"k{i}=v\n" for i in range(javaprops.MAX_ENTRIES + 1)))
    nul = tmp_path / "nul.properties"
    nul.write_bytes(b"a=\x00")
    with pytest.raises(UsageError, match="NUL"):
        javaprops.load(nul)
    with pytest.raises(UsageError, match="not found"):
        javaprops.load(tmp_path / "nosuch")
    latin = tmp_path / "latin.properties"
    latin.write_bytes(b"name=caf\xe9\n")  # ISO-8859-1, as Properties.load(InputStream) reads it
    assert javaprops.load(latin).values["name"] == "café"


def test_repeated_key_keeps_the_last_value_and_is_warned() -> None:
    props = javaprops.parse("scalar.db.storage=cassandra\nscalar.db.storage=jdbc\n"
                            "scalar.db.contact_points=jdbc:mysql://db:3306/\n")  # fmt: skip
    assert props.values["scalar.db.storage"] == "jdbc"
    config = read_config(props)
    assert any("given twice" in w for w in config.warnings)


def test_string_array_and_jdbc_urls() -> None:
    assert string_array(" a , b\\,c ,d ") == ["a", "b,c", "d"]
    url = parse_jdbc("jdbc:postgresql://db.internal:6543/app?sslmode=require", culprit="x")
    assert (url.engine, url.host, url.port) == ("postgresql", "db.internal", 6543)
    assert (url.database, url.secret) == ("app", False)
    url = parse_jdbc("jdbc:mysql://root:hunter2@[::1]/?password=x", culprit="x")
    assert (url.host, url.port, url.secret) == ("::1", 3306, True)
    url = parse_jdbc("jdbc:mariadb://a:3307,b:3308/", culprit="x")
    assert (url.host, url.port, url.hosts) == ("a", 3307, 2)
    assert parse_jdbc("jdbc:postgresql:ledger", culprit="x").database == "ledger"
    with pytest.raises(UsageError, match="txbackup backs up"):
        parse_jdbc("jdbc:oracle:thin:@db:1521/x", culprit="x")
    with pytest.raises(UsageError, match="not a JDBC URL"):
        parse_jdbc("postgresql://x", culprit="x")


def test_toml_strings_cannot_be_escaped_from() -> None:
    hostile = 'a"\n[storage]\npath = "/etc"\\\x00\x7f\u2028'
    text = f"k = {toml_str(hostile)}\n"
    assert "\n" not in text[:-1]
    assert tomllib.loads(text) == {"k": hostile}


# -- ScalarDB sample configurations (the shapes of ScalarDB's documentation) --------------------------

JDBC_POSTGRES = """\
# Comma-separated contact points
scalar.db.contact_points=jdbc:postgresql://localhost:5432/
scalar.db.username=postgres
scalar.db.password=postgres
scalar.db.storage=jdbc
scalar.db.consensus_commit.isolation_level=SERIALIZABLE
"""

JDBC_MYSQL_CUSTOM = """\
scalar.db.storage=jdbc
scalar.db.contact_points=jdbc:mysql://mysql.internal:3306/
scalar.db.username=${env:SCALAR_DB_USERNAME}
scalar.db.password=${env:SCALAR_DB_PASSWORD}
scalar.db.consensus_commit.coordinator.namespace=coord
scalar.db.system_namespace_name=meta
scalar.db.server.port=60052
"""

CASSANDRA = """\
scalar.db.contact_points=cass1.internal,cass2.internal
scalar.db.contact_port=9042
scalar.db.username=cassandra
scalar.db.password=cassandra
"""

DYNAMO = """\
scalar.db.storage=dynamo
scalar.db.contact_points=us-east-1
scalar.db.username=AKIAEXAMPLE
scalar.db.password=wJalrXUtnFEMI/K7MDENG
scalar.db.dynamo.endpoint_override=http://localhost:8000
scalar.db.dynamo.namespace.prefix=prod_
"""

COSMOS = """\
scalar.db.storage=cosmos
scalar.db.contact_points=https://bankacct.documents.azure.com:443/
scalar.db.password=c2VjcmV0LWtleQ==
"""

MULTI = """\
scalar.db.storage=multi-storage
scalar.db.multi_storage.storages=postgresql,mysql,cassandra
scalar.db.multi_storage.storages.postgresql.storage=jdbc
scalar.db.multi_storage.storages.postgresql.contact_points=jdbc:postgresql://pg:5432/app
scalar.db.multi_storage.storages.postgresql.username=postgres
scalar.db.multi_storage.storages.postgresql.password=${env:PG_PASSWORD}
scalar.db.multi_storage.storages.mysql.storage=jdbc
scalar.db.multi_storage.storages.mysql.contact_points=jdbc:mariadb://maria:3306/
scalar.db.multi_storage.storages.mysql.username=root
scalar.db.multi_storage.storages.mysql.password=maria-secret-pw
scalar.db.multi_storage.storages.cassandra.storage=cassandra
scalar.db.multi_storage.storages.cassandra.contact_points=localhost
scalar.db.multi_storage.namespace_mapping=customer:mysql,order:postgresql,\\
    stock:cassandra,coordinator:mysql
scalar.db.multi_storage.default_storage=postgresql
scalar.db.consensus_commit.coordinator.group_commit.enabled=true
"""


def made(text: str) -> tuple[dict[str, Any], list[str]]:
    result = build_cluster_file(read_config(javaprops.parse(text)), source="database.properties")
    return tomllib.loads(result.text), result.warnings


def targets_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["targets"]}


def test_single_storage_postgres() -> None:
    doc, warnings = made(JDBC_POSTGRES)
    (pg,) = doc["targets"]
    assert pg == {
        "name": "jdbc", "kind": "postgres", "host": "localhost", "port": 5432, "user": "postgres",
        "password_env": "TXBACKUP_JDBC_PASSWORD", "databases": ["postgres"],
        "coordinator_namespace": "coordinator", "system_namespace": "scalardb",
    }  # fmt: skip
    assert doc["scalardb"] == {
        "coordinator_namespace": "coordinator", "coordinator_target": "jdbc",
        "system_namespace": "scalardb", "group_commit": False,
    }  # fmt: skip
    assert any("secret (scalar.db.password)" in w and "TXBACKUP_JDBC_PASSWORD" in w for w in warnings)


def test_single_storage_mysql_with_env_references_and_custom_names() -> None:
    result = build_cluster_file(read_config(javaprops.parse(JDBC_MYSQL_CUSTOM)), source="p")
    doc = tomllib.loads(result.text)
    (my,) = doc["targets"]
    assert my["kind"] == "mysql" and my["host"] == "mysql.internal"
    assert my["password_env"] == "SCALAR_DB_PASSWORD"  # the variable the properties read
    assert "user" not in my  # ${env:...}: not known here
    assert "databases" not in my  # unknown: a TODO placeholder, and said so
    assert '# databases = ["TODO"]' in result.text
    assert (my["coordinator_database"], my["system_database"]) == ("coord", "meta")
    assert doc["scalardb"]["coordinator_namespace"] == "coord"
    assert doc["scalardb"]["system_namespace"] == "meta"
    assert '"scalardb-1.internal:60052"' in result.text  # the server's port in the endpoints hint
    assert any("complete its databases" in w for w in result.warnings)
    assert not any("secret" in w for w in result.warnings)


def test_single_storage_cassandra() -> None:
    doc, warnings = made(CASSANDRA)  # no scalar.db.storage: ScalarDB's default is cassandra
    (cass,) = doc["targets"]
    assert cass["kind"] == "cassandra"
    assert cass["agents"] == ["cass1.internal:7480", "cass2.internal:7480"]
    assert cass["coordinator_keyspace"] == "coordinator" and cass["system_keyspace"] == "scalardb"
    assert cass["token_env"] == "TXBACKUP_AGENT_TOKEN"
    assert any("complete its keyspaces" in w for w in warnings)


def test_single_storage_dynamodb() -> None:
    result = build_cluster_file(read_config(javaprops.parse(DYNAMO)), source="p")
    doc = tomllib.loads(result.text)
    (dyn,) = doc["targets"]
    assert dyn["kind"] == "dynamodb" and dyn["region"] == "us-east-1"
    assert dyn["endpoint_url"] == "http://localhost:8000"
    assert dyn["tables"] == ["prod_coordinator.state", "prod_scalardb.metadata"]
    assert dyn["coordinator_table"] == "prod_coordinator.state"
    assert dyn["access_key_id_env"] == "TXBACKUP_DYNAMODB_ACCESS_KEY_ID"
    assert dyn["secret_access_key_env"] == "TXBACKUP_DYNAMODB_SECRET_ACCESS_KEY"
    assert "AKIAEXAMPLE" not in result.text and "wJalrXUtnFEMI" not in result.text
    assert sum("holds a secret" in w or "hold a secret" in w for w in result.warnings) == 2


def test_single_storage_cosmos() -> None:
    result = build_cluster_file(read_config(javaprops.parse(COSMOS)), source="p")
    doc = tomllib.loads(result.text)
    (cosmos,) = doc["targets"]
    assert cosmos["kind"] == "cosmos" and cosmos["account"] == "bankacct"
    assert "subscription_id" not in cosmos and "# subscription_id = TODO" in result.text
    assert cosmos["coordinator_database"] == "coordinator" and cosmos["system_database"] == "scalardb"
    assert "c2VjcmV0LWtleQ" not in result.text
    assert any("Cosmos DB key" in w for w in result.warnings)


def test_multi_storage_places_the_coordinator_and_the_mapped_namespaces() -> None:
    result = build_cluster_file(read_config(javaprops.parse(MULTI)), source="p")
    doc = tomllib.loads(result.text)
    by_name = targets_of(doc)
    assert list(by_name) == ["postgresql", "mysql", "cassandra"]
    pg, my, cass = by_name["postgresql"], by_name["mysql"], by_name["cassandra"]
    # the coordinator is mapped to mysql: only that target holds it
    assert doc["scalardb"]["coordinator_target"] == "mysql" and doc["scalardb"]["group_commit"] is True
    assert my["coordinator_database"] == "coordinator" and my["databases"] == ["customer", "coordinator"]
    assert pg["coordinator_namespace"] == "" and cass["coordinator_keyspace"] == ""
    # every storage keeps its own system namespace
    assert (pg["system_namespace"], my["system_database"], cass["system_keyspace"]) == ("scalardb",) * 3
    # the default storage: the whole database (unmapped namespaces live there)
    assert pg["databases"] == ["app"] and "include" not in pg
    assert pg["password_env"] == "PG_PASSWORD" and my["password_env"] == "TXBACKUP_MYSQL_PASSWORD"
    assert cass["keyspaces"] == ["stock"]
    assert not any('target "cassandra": the properties do not say' in w for w in result.warnings)


def test_multi_storage_errors() -> None:
    base = "scalar.db.storage=multi-storage\n"
    with pytest.raises(UsageError, match=r"without scalar\.db\.multi_storage\.storages"):
        read_config(javaprops.parse(base))
    with pytest.raises(UsageError, match="storage 'a' is multi-storage again"):  # as in Java
        read_config(javaprops.parse(base + "scalar.db.multi_storage.storages=a\n"))
    two = base + "scalar.db.multi_storage.storages=a,b\n" + "".join(
        f"scalar.db.multi_storage.storages.{s}.storage=cassandra\n" for s in "ab"
    )
    with pytest.raises(UsageError, match="default_storage must name one of"):
        read_config(javaprops.parse(two))
    with pytest.raises(UsageError, match="is not namespace:storage"):
        read_config(javaprops.parse(two + "scalar.db.multi_storage.default_storage=a\n"
                                    "scalar.db.multi_storage.namespace_mapping=ns:c\n"))  # fmt: skip
    with pytest.raises(UsageError, match="twice, or an empty one"):
        read_config(javaprops.parse(base + "scalar.db.multi_storage.storages=a,,b\n"))
    with pytest.raises(UsageError, match="client's configuration"):
        read_config(javaprops.parse("scalar.db.transaction_manager=cluster\n"))


def test_hostile_values_stay_strings() -> None:
    """Storage names, namespaces, hosts and users from the file are data: none becomes a table,
    a key or a comment line of the cluster file."""
    decoded = '"]\n[storage]\npath = "/etc"\n#'
    # escaped for a .properties key or value: a blank, '=' or ':' would end a key
    evil = "".join({"\n": "\\n", " ": "\\ ", "=": "\\=", ":": "\\:"}.get(c, c) for c in decoded)
    text = (
        "scalar.db.storage=multi-storage\n"
        f"scalar.db.multi_storage.storages=x{evil}\n"
        f"scalar.db.multi_storage.storages.x{evil}.storage=jdbc\n"
        f"scalar.db.multi_storage.storages.x{evil}.contact_points="
        "jdbc:mysql://h\"\\nevil = 1\\n#:3306/\n"
        f"scalar.db.multi_storage.storages.x{evil}.username=u{evil}\n"
        f"scalar.db.multi_storage.namespace_mapping=n{evil}:x{evil}\n"
        f"scalar.db.multi_storage.default_storage=x{evil}\n"
        f"scalar.db.consensus_commit.coordinator.namespace=c{evil}\n"
    )
    result = build_cluster_file(read_config(javaprops.parse(text)), source=f"p{evil}")
    doc = tomllib.loads(result.text)
    assert set(doc) == {"applications", "storage", "scalardb", "targets"} and doc["applications"] == {}
    assert doc["storage"] == {"path": "backups"}
    (target,) = doc["targets"]
    assert target["name"].startswith("x__") and "\n" not in target["name"]
    assert target["databases"] == [f"n{decoded}"] and target["coordinator_database"] == f"c{decoded}"
    assert target["user"] == f"u{decoded}" and target["host"] == 'h"\nevil = 1\n#'
    assert doc["scalardb"]["coordinator_namespace"] == f"c{decoded}"
    for line in result.text.splitlines():
        tables = ("[applications]", "[storage]", "[scalardb]", "[[targets]]")
        assert not line.startswith("[") or line in tables


# -- the CLI -------------------------------------------------------------------------------------------


def test_init_writes_a_private_file_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    props = tmp_path / "database.properties"
    props.write_text(MULTI)
    out = tmp_path / "cluster.toml"
    argv = ["init", "--scalardb-config", str(props), "--output", str(out), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["coordinator_target"] == "mysql"
    assert [t["name"] for t in summary["targets"]] == ["postgresql", "mysql", "cassandra"]
    assert "TXBACKUP_MYSQL_PASSWORD" in captured.err
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert "maria-secret-pw" not in out.read_text()  # a placeholder, never the password
    assert main(argv) == 2
    assert "exists; give --force" in capsys.readouterr().err
    out.write_text("old")
    assert main([*argv, "--force"]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and "[scalardb]" in out.read_text()
    assert main(["init", "--scalardb-config", str(tmp_path / "nosuch"), "--output", str(out)]) == 2
    assert main(["init", "--storage", str(tmp_path / "s"), "--force"]) == 2


# -- the [scalardb] rule ---------------------------------------------------------------------------------


def pg(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "postgres", "databases": ["app"], **extra}


def rule(targets: list[dict[str, Any]], **scalardb: Any) -> list[dict[str, Any]]:
    table = {"coordinator_namespace": "coordinator", "coordinator_target": None,
             "system_namespace": "scalardb", "group_commit": False} | scalardb  # fmt: skip
    return apply_scalardb(targets, table, "f")


def test_the_rule_places_the_coordinator_and_the_system_namespace() -> None:
    cass = {"name": "c", "kind": "cassandra", "agents": ["127.0.0.1:7480"], "keyspaces": ["ks"]}
    placed = rule([pg("p"), cass, {"name": "s", "kind": "sqlite", "path": "x.db"}], coordinator_target="p")
    assert placed[0]["coordinator_namespace"] == "coordinator" and placed[0]["system_namespace"] == "scalardb"
    # no target demands the coordinator where the configuration places it elsewhere
    assert placed[1]["coordinator_keyspace"] == "" and placed[1]["system_keyspace"] == "scalardb"
    assert placed[2] == {"name": "s", "kind": "sqlite", "path": "x.db"}
    with pytest.raises(UsageError, match=r"coordinator namespace 'coordinator' is in no target"):
        rule([pg("p")])
    with pytest.raises(UsageError, match=r"coordinator_target 'pgg' is not a target.*did you mean \"pg\""):
        rule([pg("pg")], coordinator_target="pgg")
    with pytest.raises(UsageError, match="system_namespace = \"\" leaves out ScalarDB's system namespace"):
        rule([pg("p", system_namespace="")], coordinator_target="p")
    with pytest.raises(UsageError, match=r"coordinator_namespace = 'other', but \[scalardb\] places"):
        rule([pg("p", coordinator_namespace="other")], coordinator_target="p")
    dyn = {"name": "d", "kind": "dynamodb", "region": "r", "tables": ["prod_coordinator.state"]}
    with pytest.raises(UsageError, match=r"leave out ScalarDB's system table scalardb\.metadata"):
        rule([dyn], coordinator_target="d")
    ok = rule([{**dyn, "tables": ["prod_coordinator.state", "prod_scalardb.metadata"],
                "coordinator_table": "prod_coordinator.state"}], coordinator_target="d")  # fmt: skip
    assert ok[0]["coordinator_table"] == "prod_coordinator.state"
    # a transaction manager without a coordinator: nothing to place
    assert rule([pg("p")], coordinator_namespace="")[0]["coordinator_namespace"] == ""


def test_a_cluster_file_without_the_coordinator_is_refused_at_load(tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    file.write_text(
        '[scalardb]\ncoordinator_namespace = "coordinator"\n\n'
        '[[targets]]\nname = "db"\nkind = "sqlite"\npath = "app.db"\n'
    )
    with pytest.raises(UsageError, match=r"cluster.toml \[scalardb\]: the coordinator namespace"):
        load_cluster(file)
    file.write_text(file.read_text().replace("[scalardb]\n", '[scalardb]\ncoordinator_target = "db"\n'))
    assert load_cluster(file).scalardb == {
        "coordinator_namespace": "coordinator", "coordinator_target": "db",
        "system_namespace": "scalardb", "group_commit": False,
    }  # fmt: skip
    file.write_text(file.read_text() + "\n[scalardb.x]\n")
    with pytest.raises(UsageError, match="unknown setting"):
        load_cluster(file)


def test_a_postgres_storage_that_is_not_the_default_includes_its_mapped_schemas() -> None:
    text = MULTI.replace("default_storage=postgresql", "default_storage=mysql")
    doc, _ = made(text)
    pg = targets_of(doc)["postgresql"]
    # only mapped namespaces can live in a non-default storage: its schemas, plus ScalarDB's
    assert pg["include"] == ["order"] and pg["databases"] == ["app"]
    assert pg["coordinator_namespace"] == "" and pg["system_namespace"] == "scalardb"


def test_deprecated_metadata_properties_name_the_system_namespace_of_their_kind() -> None:
    doc, _ = made(JDBC_POSTGRES + "scalar.db.jdbc.table_metadata.schema=old_meta\n"
                  "scalar.db.dynamo.table_metadata.namespace=not_this\n")  # fmt: skip
    assert doc["targets"][0]["system_namespace"] == "old_meta"
