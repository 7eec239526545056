from image_lib import base_image, docker_engine  # noqa: F401  (fixtures)
