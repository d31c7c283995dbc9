"""The fake Asana and fake Slack servers (real HTTP on 127.0.0.1) and Slack's request signing.

They ship in the package because people run them: `asana-export-bot demo` (issue 10), the test kit
(`bot.testing`) and the benchmarks. Only runtime dependencies are imported here; validating the fake
against Asana's OpenAPI document stays in tests/test_fake_asana.py.
"""
