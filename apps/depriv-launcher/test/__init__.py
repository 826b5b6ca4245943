# Makes test/python/*.py importable as test.python.* for `python3 -m unittest test/python/...`
# (otherwise the standard library's own `test` package shadows this directory).
