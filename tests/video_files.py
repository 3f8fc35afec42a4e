"""Test videos written with PyAV: moving shapes, or flat grey frames whose
level encodes the frame index (to check the 25 fps re-timing)."""
import numpy as np


def write_video(path, num_frames, fps, size=(64, 48), kind="shapes"):
  """Writes an H.264 (or MPEG-4) video; returns its path.  kind "shapes": a
  bright square moving right over a gradient; "index": frame i is flat grey
  level 8 * i (mod 256)."""
  import av  # pylint: disable=import-outside-toplevel
  w, h = size
  codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
  with av.open(str(path), "w") as c:
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    if codec == "libx264":
      s.options = {"crf": "0", "preset": "ultrafast"}    # near-lossless levels
    for i in range(num_frames):
      if kind == "index":
        img = np.full((h, w, 3), (8 * i) % 256, np.uint8)
      else:
        yy, xx = np.mgrid[:h, :w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 64)],
                       -1).astype(np.uint8)
        x0 = (3 * i) % (w - 12)
        img[h // 3:h // 3 + 12, x0:x0 + 12] = 255
      for pk in s.encode(__import__("av").VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(pk)
    for pk in s.encode():
      c.mux(pk)
  return str(path)
