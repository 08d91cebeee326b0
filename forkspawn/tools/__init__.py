"""Build and publishing tools beside the harness: the engine set a machine gets (`python3 -m
forkspawn.tools.engineset`, run by the Makefile), the offline engine bundle (`python -m
forkspawn.tools.bundle`), asv's published HTML made to work offline (`python -m
forkspawn.tools.asvhtml`) and asv's environment plugin (`asvenv`, named in asv.conf.json).

They import the harness where they share a contract with it (`forkspawn.bundled.SUMMARY`,
`forkspawn.atomic`); no module of the harness imports them (tests/test_imports.py), so a
measurement never loads pip, zip or asv's plugin API. Standard library only at this level: the
bundle's `install` runs on a box before anything else is installed there.
"""
