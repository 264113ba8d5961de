"""Generated reference pages stay generated: docs/reference/buildcache.md is what
tools/crd_reference.py makes of the CRD today, and it names every field the CRD has."""

import pathlib
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def all_paths(schema, path):
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        yield here
        if sub.get("type") == "array" and sub.get("items", {}).get("type") == "object":
            yield from all_paths(sub["items"], here + "[]")
        elif sub.get("type") == "object":
            yield from all_paths(sub, here)


def test_buildcache_reference_is_up_to_date():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "crd_reference.py"), "--check"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("crd_file,page_file,at_least", [
    ("buildcache.io_buildcaches.yaml", "buildcache.md", 40),
    ("buildcache.io_wheelbuilds.yaml", "wheelbuild.md", 12),
])
def test_buildcache_reference_lists_every_field(crd_file, page_file, at_least):
    crd = yaml.safe_load((ROOT / "crds" / crd_file).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    page = (ROOT / "docs" / "reference" / page_file).read_text()
    paths = list(all_paths(schema["properties"]["spec"], "spec"))
    paths += list(all_paths(schema["properties"]["status"], "status"))
    assert len(paths) > at_least
    missing = [p for p in paths if f"`{p}`" not in page]
    assert not missing, missing
