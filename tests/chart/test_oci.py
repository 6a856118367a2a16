"""deploy/wasm-oci.py: the filter module as an OCI artifact, checked from index to file."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import unittest

import harness as h


class OciArtifact(unittest.TestCase):
    def test_layout_holds_exactly_the_module(self):
        out = h.tempdir("pc-oci-") / "layout"
        run = lambda: subprocess.run([sys.executable, str(h.ROOT / "deploy" / "wasm-oci.py"), "--wasm", str(h.WASM),
                                      "--out", str(out), "--tag", "test"], capture_output=True, text=True, check=True)
        printed = dict(line.split("=", 1) for line in run().stdout.splitlines())
        self.assertEqual(printed["filter.sha256"], h.sha256_file(h.need(h.WASM, "make wasm")))

        def blob(digest: str) -> bytes:
            data = (out / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
            self.assertEqual("sha256:" + hashlib.sha256(data).hexdigest(), digest, "content-addressed")
            return data

        self.assertEqual(json.loads((out / "oci-layout").read_text()), {"imageLayoutVersion": "1.0.0"})
        (entry,) = json.loads((out / "index.json").read_text())["manifests"]
        self.assertEqual(entry["annotations"]["org.opencontainers.image.ref.name"], "test")
        self.assertEqual(entry["digest"], printed["manifest"])
        manifest = json.loads(blob(entry["digest"]))
        (layer,) = manifest["layers"]
        tar = gzip.decompress(blob(layer["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        self.assertEqual(config["rootfs"]["diff_ids"], ["sha256:" + hashlib.sha256(tar).hexdigest()])
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            (member,) = t.getmembers()
            self.assertEqual(member.name, "plugin.wasm")
            self.assertEqual(hashlib.sha256(t.extractfile(member).read()).hexdigest(), printed["filter.sha256"])
        # Deterministic: the same module gives the same digest.
        self.assertEqual(dict(line.split("=", 1) for line in run().stdout.splitlines()), printed)


if __name__ == "__main__":
    unittest.main()
