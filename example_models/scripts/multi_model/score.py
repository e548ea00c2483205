import os
import pickle
import json
import logging

def init():
    global model_map
    model_map = {}
    logging.basicConfig(level=logging.INFO)
    model_path = os.path.join(os.getenv('AZUREML_MODEL_DIR'), 'models')
    for model_dir in os.listdir(model_path):
        full_model_path = os.path.join(model_path, model_dir, 'model.pkl')
        try:
            if os.path.isfile(full_model_path):
                with open(full_model_path, 'rb') as f:
                    model_map[model_dir] = pickle.load(f)
                logging.info(f"Model {model_dir} loaded successfully")

        except Exception as e:
            logging.error(f"Error loading model from {full_model_path}: {e}")

def run(raw_data):
    try:
        data = json.loads(raw_data)
        model_id = data.get('model_id')
        if model_id is None or model_id not in model_map:
            return {"error": "Invalid or missing model_id"}

        model = model_map[model_id]
        input_data = data.get('data', []) # Expect data key containing list
        prediction = model.predict(input_data)
        return {"result": prediction.tolist()}

    except Exception as e:
        logging.error(f"Error processing request: {e}")
        return {"error": str(e)}
