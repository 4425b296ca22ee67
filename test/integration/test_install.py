"""`cmake --install`: the installed tree (what the container image copies) holds inferd, inferctl
and the built-in model, and an installed inferd serves that model from PREFIX/share/inferd, not
from the build directory whose path the build baked in; without the installed model it falls
back to the build tree's. The installed inferctl streams tokens from the installed inferd.

Needs INFERD_BUILD_DIR (the CMake build tree) and CMAKE_COMMAND from ctest."""

import filecmp
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import inferd_harness as H

BUILT_IN = re.compile(r"no --model: serving the built-in model (\S+)")


def install(prefix):
    cmake = os.environ.get("CMAKE_COMMAND") or H.need("cmake")
    build = os.environ.get("INFERD_BUILD_DIR")
    if not build:
        raise unittest.SkipTest("INFERD_BUILD_DIR not set (run through ctest)")
    p = subprocess.run([cmake, "--install", build, "--prefix", prefix], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    if p.returncode:
        raise AssertionError("cmake --install failed:\n" + p.stdout.decode(errors="replace"))


class TestInstall(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="inferd-install-")
        cls.prefix = os.path.join(cls.tmp, "usr")
        install(cls.prefix)
        cls.bin = os.path.join(cls.prefix, "bin", "inferd")
        cls.ctl = os.path.join(cls.prefix, "bin", "inferctl")
        cls.model = os.path.join(cls.prefix, "share", "inferd", "default.bin")
        cls.tokenizer = os.path.join(cls.prefix, "share", "inferd", "default.tokenizer.bin")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def start(self, binary):
        saved = os.environ.get("INFERD_BIN")
        os.environ["INFERD_BIN"] = binary  # the harness starts $INFERD_BIN
        try:
            s = H.Inferd()
        finally:
            if saved is None:
                del os.environ["INFERD_BIN"]
            else:
                os.environ["INFERD_BIN"] = saved
        self.addCleanup(s.check_clean_exit)
        return s

    def test_layout(self):
        for f in (self.bin, self.ctl):
            with self.subTest(file=f):
                self.assertTrue(os.access(f, os.X_OK), f)
        built_model = os.environ.get("INFERD_TEST_BUILT_MODEL")
        built_tok = os.environ.get("INFERD_TEST_BUILT_TOKENIZER")
        self.assertTrue(built_model and built_tok, "INFERD_TEST_BUILT_MODEL/_TOKENIZER not set by ctest")
        self.assertTrue(filecmp.cmp(self.model, built_model, shallow=False), "installed model differs")
        self.assertTrue(filecmp.cmp(self.tokenizer, built_tok, shallow=False), "installed tokenizer differs")

    def test_installed_inferd_serves_the_installed_model(self):
        s = self.start(self.bin)
        m = BUILT_IN.search(s.stderr())
        self.assertIsNotNone(m, s.stderr())
        self.assertEqual(os.path.realpath(m.group(1)), os.path.realpath(self.model))
        # the installed client against the installed server
        p = subprocess.run([self.ctl, "--addr", s.target, "generate", "--max-tokens", "8", "--ignore-eos",
                            "Once upon a time"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        self.assertRegex(p.stderr.decode(errors="replace"), r"finish length, .*completion 8 tokens")

    def test_without_installed_model_the_build_tree_one_is_used(self):
        # a tree with the binary alone: inferd must still start, from the model the build made
        bare = os.path.join(self.tmp, "bare", "bin")
        os.makedirs(bare)
        shutil.copy2(self.bin, bare)
        s = self.start(os.path.join(bare, "inferd"))
        m = BUILT_IN.search(s.stderr())
        self.assertIsNotNone(m, s.stderr())
        self.assertEqual(os.path.realpath(m.group(1)), os.path.realpath(os.environ["INFERD_TEST_BUILT_MODEL"]))


if __name__ == "__main__":
    H.run_main()
