"""Models the batch tests score beyond the example models, saved once per session."""
import textwrap
from pathlib import Path

#: The digits classifier behind a tensor signature for images: 32x32 uint8 pixels (the digits
#: example's PNGs), averaged back to the 8x8 features the classifier was trained on.
IMAGE_MODEL_CODE = textwrap.dedent('''
    import mlflow.models
    import mlflow.pyfunc
    import numpy as np


    class DigitsFromPixels(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            import mlflow.sklearn

            self.model = mlflow.sklearn.load_model(context.artifacts["digits"])

        def predict(self, context, model_input, params=None):
            pixels = np.asarray(model_input, dtype=np.float64)
            n = pixels.shape[0]
            features = pixels.reshape(n, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(n, 64)
            return self.model.predict(features * 16.0 / 255.0)


    mlflow.models.set_model(DigitsFromPixels())
''')


def save_image_model(path: Path, digits_model_dir: str) -> str:
    """A models-from-code pyfunc at ``path`` taking TensorSpec(uint8, (-1, 32, 32)), with the
    example models' requirements (so it runs in their environment)."""
    import mlflow.pyfunc
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from example_models.build import shared_requirements

    path = Path(path)
    code = path.parent / (path.name + "_code.py")
    code.write_text(IMAGE_MODEL_CODE)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 32, 32))]))
    mlflow.pyfunc.save_model(str(path), python_model=str(code),
                             artifacts={"digits": str(digits_model_dir)}, signature=signature,
                             pip_requirements=shared_requirements())
    return str(path)
