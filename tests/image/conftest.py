from image_lib import base_image  # noqa: F401  (fixture; docker_engine is in tests/conftest.py)
