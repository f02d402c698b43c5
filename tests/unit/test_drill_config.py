"""The ``[drill]`` table of the cluster file: read by the one strict reader (places as
``[restore.NAME]``), every mistake refused in one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from txbackup.config import load_cluster
from txbackup.errors import UsageError

HEAD = """\
[applications]
endpoints = ["127.0.0.1:9"]
[storage]
path = "store"
[[targets]]
name = "app"
kind = "sqlite"
path = "app.db"
"""


def load(tmp_path: Path, drill: str) -> dict[str, object] | None:
    config = tmp_path / "cluster.toml"
    config.write_text(HEAD + drill)
    return load_cluster(config).drill


def test_a_drill_table_is_read(tmp_path: Path) -> None:
    drill = load(
        tmp_path,
        '[drill]\ncommand = ["check", "-v", "-v"]\ntimeout = "90s"\naudit = false\n'
        '[drill.targets.app]\npath = "drill/app.db"\n'
        '[[drill.checks]]\ntarget = "app"\nsql = "SELECT 1"\nexpect = "1"\n'
        '[[drill.checks]]\nname = "rows"\ntarget = "app"\nsql = "SELECT count(*) FROM t"\n'
        "expect_nonzero = true\n",
    )
    assert drill is not None
    assert drill["command"] == ["check", "-v", "-v"] and drill["timeout"] == 90 and drill["audit"] is False
    assert drill["targets"] == {"app": {"path": str(tmp_path / "drill" / "app.db"), "password": {}}}
    checks = drill["checks"]
    assert isinstance(checks, list)
    assert [(c["name"], c["expect"], c["expect_nonzero"]) for c in checks] == [
        ("check 1", "1", False), ("rows", None, True)
    ]  # fmt: skip
    assert load(tmp_path, "") is None


@pytest.mark.parametrize(
    ("drill", "says"),
    [
        ("[drill]\ncommnd = []\n", 'did you mean "command"'),
        ('[drill]\ncommand = "check --all"\n', "command must be a list of strings"),
        ('[drill]\ncommand = ["", "x"]\n', "the program (first item) is empty"),
        ('[drill]\ntimeout = "0s"\n', "timeout"),
        ('[drill.targets.nope]\npath = "x.db"\n', "[drill.targets.nope]: no target is named 'nope'"),
        ('[drill.targets.app]\npath = "x.db"\npassword = "hunter2"\n', "password"),
        ('[drill.targets.app]\ndsn = "postgresql://u:pw@h/db"\n', "secrets never go in the cluster file"),
        ('[[drill.checks]]\ntarget = "app"\n', "sql is required"),
        ('[[drill.checks]]\nsql = "SELECT 1"\n', "target is required"),
        ('[[drill.checks]]\ntarget = "app"\nsql = "SELECT 1"\nexpect = "1"\nexpect_nonzero = true\n',
         "not both"),
        ('[[drill.checks]]\ntarget = "x"\nsql = "SELECT 1"\n', "check 1: no target named 'x'"),
        ('[[drill.checks]]\nname = "a"\ntarget = "app"\nsql = "SELECT 1"\n'
         '[[drill.checks]]\nname = "a"\ntarget = "app"\nsql = "SELECT 2"\n',
         "names must be unique (a twice)"),
        ('[drill]\nchecks = 3\n', "checks must be [[drill.checks]] tables"),
    ],
)  # fmt: skip
def test_mistakes_are_refused_naming_them(tmp_path: Path, drill: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        load(tmp_path, drill)
    assert says in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
