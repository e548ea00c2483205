from tests.batch.fixtures import image_model_dir, model_python  # noqa: F401
from tests.scoring.conftest import digits_images, digits_model_dir  # noqa: F401
