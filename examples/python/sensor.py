"""A sensor in Python that ships readings through libshipper with ctypes.

    python3 examples/python/sensor.py target/debug/libshipper.so config.toml 1000

config.toml holds data_dir, one source of type = "sdk" and the sinks
(docs/config.md). Exits 0 once every reading was acknowledged.
"""
import ctypes
import json
import sys

SHIPPER_OK = 0


def main(library_path, config_path, readings):
    lib = ctypes.CDLL(library_path)
    lib.shipper_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.shipper_insert.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.shipper_wait_for_upload.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    lib.shipper_close.argtypes = [ctypes.c_void_p]
    lib.shipper_last_error.restype = ctypes.c_char_p

    def check(status, what):
        if status != SHIPPER_OK:
            raise RuntimeError(f"{what}: {status}: {lib.shipper_last_error().decode()}")

    with open(config_path, "rb") as config:
        text = config.read()
    ingestor = ctypes.c_void_p()
    check(lib.shipper_open(text, ctypes.byref(ingestor)), "open")
    try:
        for seq in range(readings):
            record = json.dumps({"seq": seq, "station": "py-sensor", "celsius": 15 + seq % 100 / 10}).encode()
            check(lib.shipper_insert(ingestor, b"weather", record, len(record)), "insert")
        check(lib.shipper_wait_for_upload(ingestor, 60_000), "wait for upload")
    finally:
        check(lib.shipper_close(ingestor), "close")
    print(f"{readings} readings inserted and acknowledged")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
