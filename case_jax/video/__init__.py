"""From video files to I3D features (the optional ``[video]`` extra):
decoding and the snippet grid (decode.py), TV-L1 flow (flow.py), the I3D
network and its weights (i3d.py), and the resumable folder extraction
(extract.py) behind ``python -m case_jax.extract`` and
``--mode=predict --videos``."""
