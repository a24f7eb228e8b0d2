"""`fxquant sweep`: models x recipes x bit-widths, each cell `fxquant quantize` run as a Ray task.

`cell` builds and runs one cell exactly as `fxquant quantize` would; `store` keeps finished cells
on disk so a restarted sweep skips them; `command` is the command line and the Ray fan-out.
"""
