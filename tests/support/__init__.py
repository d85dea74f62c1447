"""Helpers the test suite shares: free ports, real servers on loopback, exposition parsing.

Every server here binds 127.0.0.1 on an ephemeral port, keeps its files in a
temporary directory, and is stopped by the fixture that started it. The
fixtures in ``tests/conftest.py`` wrap these classes for pytest.
"""
