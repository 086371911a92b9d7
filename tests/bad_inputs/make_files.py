"""Writes the bad-input files that the tests feed to the command line and the page.

Run once with Pillow installed (`pip install pillow`); the files are committed, so the tests
need neither Python nor Pillow. Each file is small; see tests/BAD_INPUTS.md for what each tests.
"""
import io
import pickle
import struct
import zipfile
import zlib

from PIL import Image


def scene(width, height):
    """Left half red, right half blue, a green top band: orientation mistakes show."""
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 30, 200), (width // 2, 0, width, height))
    image.paste((30, 200, 30), (0, 0, width, height // 4))
    return image


def png_chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def raw_png(width, height, bit_depth, colour_type, rows):
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    data = zlib.compress(b"".join(b"\0" + row for row in rows), 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def save(name, data):
    with open(name, "wb") as f:
        f.write(data)


base = scene(64, 48)
save("not_an_image.png", b"This is a text file with a .png name.\n" * 4)
save("empty.png", b"")
jpeg = io.BytesIO()
base.save(jpeg, "JPEG", quality=90)
save("truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
Image.new("RGB", (1, 1), (120, 130, 140)).save("one_pixel.png")
scene(3, 3).save("three_pixels.png")
base.convert("L").save("grey.png")
rgba = base.convert("RGBA")
rgba.putalpha(128)
rgba.save("alpha.png")
base.convert("P", palette=Image.ADAPTIVE, colors=16).save("palette.png")
# 16-bit RGB (Pillow writes 16-bit grey only): each 8-bit value v stored as v * 257.
rows16 = [b"".join(struct.pack(">HHH", *(257 * c for c in base.getpixel((x, y)))) for x in range(64)) for y in range(48)]
save("rgb16.png", raw_png(64, 48, 16, 2, rows16))
base.convert("CMYK").save("cmyk.jpg", "JPEG", quality=95)
# Stored 64x48 with EXIF orientation 6: shown rotated 90 degrees clockwise, 48x64.
exif = Image.Exif()
exif[0x0112] = 6
base.save("exif_rotated.jpg", "JPEG", quality=95, exif=exif)
# 12000x9000, 1 bit per pixel: 108 megapixels in a few kilobytes (1000-pixel checkerboard).
row_a = bytes(([0xFF] * 125 + [0x00] * 125) * 6)
row_b = bytes(([0x00] * 125 + [0xFF] * 125) * 6)
rows = [row_a if (y // 1000) % 2 == 0 else row_b for y in range(9000)]
save("huge_12000x9000.png", raw_png(12000, 9000, 1, 0, rows))
# Ground-truth masks for the 64x48 image: another size, and values other than 0 / 1 / 255.
Image.new("L", (32, 24), 0).save("mask_wrong_size.png")
mask = Image.new("L", (64, 48), 0)
mask.paste(7, (10, 10, 20, 20))
mask.paste(1, (30, 10, 40, 20))
mask.save("mask_unknown_values.png")
base.save("scene_64x48.png")


class Callable:
    """Pickles as a call of os.system, the classic malicious checkpoint."""

    def __reduce__(self):
        import os

        return (os.system, ("echo rpl-web-test-was-executed > /tmp/rpl-pwned",))


payload = pickle.dumps({"model": {"branch1.mod1.conv1.weight": Callable()}}, protocol=2)
with zipfile.ZipFile("calls_os_system.pth", "w") as archive:
    archive.writestr("calls_os_system/data.pkl", payload)
    archive.writestr("calls_os_system/version", "3\n")


# A checkpoint of another network: the RPL stem at width 1/8, one layer of another shape and a
# classifier the RPL network has no place for. Needs torch (a throwaway venv); skipped without it.
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    generator = torch.Generator().manual_seed(0)
    torch.save({
        "branch1.mod1.conv1.weight": torch.randn(8, 3, 3, 3, generator=generator),
        "branch1.mod2.block1.bn1.0.weight": torch.randn(9, generator=generator),
        "fc.weight": torch.randn(10, 16, generator=generator),
    }, "other_network.pth")
