"""Runs NAME as the router does, over its stdin/stdout: `python3 -m unittest`."""

import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


class ModuleTest(unittest.TestCase):
    def setUp(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "NAME.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.next_id = 0

    def tearDown(self):
        self.proc.stdin.close()
        self.assertEqual(self.proc.wait(timeout=10), 0)
        self.proc.stdout.close()

    def call(self, method, params=None):
        self.next_id += 1
        request = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        self.assertEqual(reply["id"], self.next_id)
        return reply

    def test_methods(self):
        self.assertEqual(self.call("initialize", {"greeting": "hi"})["result"]["name"], "NAME")
        self.assertEqual(self.call("ping")["result"], "pong")
        self.assertEqual(self.call("hello", {"name": "polis"})["result"], "hi, polis")
        self.assertEqual(self.call("hello", {"name": 3})["error"]["code"], -32602)
        self.assertEqual(self.call("nope")["error"]["code"], -32601)


if __name__ == "__main__":
    unittest.main()
