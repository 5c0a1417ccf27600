# NGC Triton 24.10 (= tritonserver 2.51, the version the tests run) plus what the python-backend
# models import. Build context: the repository root.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
# ctranslate2: the whisper model's default engine (its wheel runs CUDA 12 with the image's cuDNN 9).
RUN pip install --no-cache-dir "numpy<2" openai-whisper==20250625 ctranslate2==4.8.5 onnxruntime-gpu tokenizers
