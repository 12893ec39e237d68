#!/usr/bin/env python3
"""Tests for .github/scripts/gitops_images.py, the digest bump used by main.yml,
release.yml and promote.yml, plus a parse of every committed images.yaml so a change
of shape there fails here rather than in the middle of a promotion."""

from __future__ import annotations

import importlib.util
import io
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("gitops_images", ROOT / ".github/scripts/gitops_images.py")
gi = importlib.util.module_from_spec(SPEC)
sys.modules["gitops_images"] = gi
SPEC.loader.exec_module(gi)

D1 = "sha256:" + "1" * 64
D0 = "sha256:" + "0" * 64
D2 = "sha256:" + "a" * 64
D3 = "sha256:" + "b" * 64
REG = "europe-west1-docker.pkg.dev"

FLOW = f"""# pinned by CI; do not edit by hand
images:
  producer: {{registry: {REG}, repository: proj/codigo/codigo-producer, tag: "", digest: "{D1}"}}
  consumer: {{registry: {REG}, repository: proj/codigo/codigo-consumer, tag: "", digest: "{D1}"}}  # keep
  ctl: {{registry: {REG}, repository: proj/codigo/codigo-ctl, tag: "", digest: "{D1}"}}
"""

# The same names, split the other way (registry carries the path), as gitops/ does.
BLOCK = f"""images:
  producer:
    registry: {REG}/proj/codigo
    repository: codigo-producer
    tag: "v1.0.0"
    digest: "{D2}"
  consumer:
    registry: {REG}/proj/codigo
    repository: codigo-consumer
    tag: ""
    digest: "{D2}"
  ctl:
    registry: {REG}/proj/codigo
    repository: codigo-ctl
    tag: ""
    digest: "{D2}"
other: true
"""


def name(component: str) -> str:
    return f"{REG}/proj/codigo/codigo-{component}"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = gi.main(list(argv))
    return code, out.getvalue(), err.getvalue()


class GitopsImagesTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def write(self, name: str, text: str) -> Path:
        p = self.dir / name
        p.write_text(text, encoding="utf-8")
        return p

    def test_set_rewrites_one_flow_line_only(self) -> None:
        p = self.write("dev.yaml", FLOW)
        code, _, err = run("set", str(p), "--image", "consumer", "--ref", f"{name('consumer')}@{D3}")
        self.assertEqual(code, 0, err)
        before, after = FLOW.splitlines(), p.read_text().splitlines()
        diff = [(a, b) for a, b in zip(before, after) if a != b]
        self.assertEqual(len(diff), 1)
        self.assertIn(f'digest: "{D3}"', diff[0][1])
        self.assertIn("repository: proj/codigo/codigo-consumer", diff[0][1])
        self.assertEqual(gi.ImagesFile(p).entries["consumer"].values["digest"], D3)

    def test_set_is_idempotent(self) -> None:
        p = self.write("dev.yaml", FLOW)
        code, out, _ = run("set", str(p), "--image", "producer", "--ref", f"{name('producer')}@{D1}", "--tag", "")
        self.assertEqual(code, 0)
        self.assertIn("unchanged", out)
        self.assertEqual(p.read_text(), FLOW)

    def test_set_block_style_keeps_layout(self) -> None:
        p = self.write("qa.yaml", BLOCK)
        code, _, err = run("set", str(p), "--image", "ctl", "--ref", f"{name('ctl')}@{D3}", "--tag", "v1.2.3")
        self.assertEqual(code, 0, err)
        text = p.read_text()
        self.assertIn(f'    digest: "{D3}"', text)
        self.assertIn('    tag: "v1.2.3"', text)
        self.assertTrue(text.endswith("other: true\n"))
        self.assertEqual(len(text.splitlines()), len(BLOCK.splitlines()))

    def test_rejects_bad_digest_and_tag(self) -> None:
        p = self.write("dev.yaml", FLOW)
        for bad in ("sha256:abc", "latest", D0, "sha256:" + "G" * 64):
            code, _, _ = run("set", str(p), "--image", "ctl", "--ref", f"{name('ctl')}@{bad}")
            self.assertEqual(code, 1, bad)
        code, _, _ = run("set", str(p), "--image", "ctl", "--ref", f"{name('ctl')}@{D3}", "--tag", "v1;rm -rf /")
        self.assertEqual(code, 1)
        code, _, _ = run("set", str(p), "--image", "ctl", "--ref", D3)
        self.assertEqual(code, 1)
        self.assertEqual(p.read_text(), FLOW)

    def test_set_refuses_a_digest_pushed_elsewhere(self) -> None:
        p = self.write("dev.yaml", FLOW)
        code, _, err = run("set", str(p), "--image", "ctl", "--ref", f"{REG}/other/codigo/codigo-ctl@{D3}")
        self.assertEqual(code, 1)
        self.assertIn("pushed to", err)
        self.assertEqual(p.read_text(), FLOW)

    def test_promote_copies_tag_and_digest(self) -> None:
        src = self.write("qa.yaml", BLOCK)
        dst = self.write("preprod.yaml", FLOW)
        code, out, err = run("promote", str(src), str(dst))
        self.assertEqual(code, 0, err)
        pins = gi.ImagesFile(dst)
        for name in gi.COMPONENTS:
            self.assertEqual(pins.entries[name].values["digest"], D2)
        self.assertEqual(pins.entries["producer"].values["tag"], "v1.0.0")
        self.assertIn("producer changed", out)
        self.assertTrue(dst.read_text().startswith("# pinned by CI"))
        code, out, _ = run("promote", str(src), str(dst))
        self.assertEqual(code, 0)
        self.assertNotIn(" changed", out)

    def test_promote_dry_run_writes_nothing(self) -> None:
        src = self.write("qa.yaml", BLOCK)
        dst = self.write("preprod.yaml", FLOW)
        code, out, _ = run("promote", "--dry-run", str(src), str(dst))
        self.assertEqual(code, 0)
        self.assertIn("changed", out)
        self.assertEqual(dst.read_text(), FLOW)

    def test_promote_refuses_other_repository(self) -> None:
        src = self.write("qa.yaml", BLOCK.replace("repository: codigo-ctl", "repository: codigo-ctl-old"))
        dst = self.write("preprod.yaml", FLOW)
        code, _, err = run("promote", str(src), str(dst))
        self.assertEqual(code, 1)
        self.assertIn("repository differs", err)
        self.assertEqual(dst.read_text(), FLOW)

    def test_promote_refuses_placeholder_source(self) -> None:
        dst = self.write("preprod.yaml", BLOCK)
        for placeholder in ("sha256:...", D0):
            src = self.write("qa.yaml", FLOW.replace(D1, placeholder))
            code, _, err = run("promote", str(src), str(dst))
            self.assertEqual(code, 1, placeholder)
            self.assertIn("no usable digest", err)
        self.assertEqual(dst.read_text(), BLOCK)

    def test_missing_image_is_an_error(self) -> None:
        p = self.write("dev.yaml", "\n".join(l for l in FLOW.splitlines() if "ctl:" not in l) + "\n")
        code, _, err = run("show", str(p))
        self.assertEqual(code, 1)
        self.assertIn("'ctl' missing", err)

    def test_show_prints_pullable_refs(self) -> None:
        p = self.write("dev.yaml", FLOW)
        code, out, _ = run("show", str(p))
        self.assertEqual(code, 0)
        self.assertIn(f"producer {name('producer')}@{D1}", out.splitlines())
        code, out, _ = run("name", str(self.write("qa.yaml", BLOCK)), "--image", "consumer")
        self.assertEqual((code, out.strip()), (0, name("consumer")))


class CommittedPinsTest(unittest.TestCase):
    def test_every_environment_file_has_the_agreed_shape(self) -> None:
        files = sorted((ROOT / "gitops/environments").glob("*/images.yaml"))
        for path in files:
            with self.subTest(env=path.parent.name):
                pins = gi.ImagesFile(path)
                for component in gi.COMPONENTS:
                    self.assertRegex(pins.name(component), rf"^[a-z0-9-]+-docker\.pkg\.dev/.+/codigo-{component}$")
        # One registry for every environment: promotion copies digests, never images.
        names = {tuple(gi.ImagesFile(p).name(c) for c in gi.COMPONENTS) for p in files}
        self.assertLessEqual(len(names), 1, names)
        for env in ("dev", "qa", "preprod", "prod"):
            env_dir = ROOT / "gitops/environments" / env
            if env_dir.is_dir():
                with self.subTest(env=env):
                    self.assertTrue((env_dir / "images.yaml").is_file(), f"{env_dir}/images.yaml missing")


if __name__ == "__main__":
    unittest.main(verbosity=1)
