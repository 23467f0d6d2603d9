"""`catchup demo` and the sandbox sources behind it, the tests and the benchmarks.

run.py runs the demo; sandbox.py is the interface every engine's sandbox
implements (mariadb.py with the shop.py dataset; postgres.py with pgbench).
Nothing in the production engines imports this package.
"""
