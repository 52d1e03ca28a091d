import logging

# bitsandbytes (imported by peft) tries to fetch a CPU 4-bit kernel from the model hub on AVX512-BF16
# machines and warns on every start when it cannot; we never use 4-bit on CPU (utils/model/loader.py
# refuses it), so the warning is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
