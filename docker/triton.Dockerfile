# NGC Triton 24.10 (= tritonserver 2.51, the version the tests run) plus what the python-backend
# models import. Build context: the repository root.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
RUN pip install --no-cache-dir "numpy<2" openai-whisper==20250625 onnxruntime-gpu tokenizers
