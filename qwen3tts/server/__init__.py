"""The speak server (aiohttp): protocol and I/O only. Nothing in this package imports torch at
import time; the engine's worker thread loads the model (and torch) when it is first needed."""
