# The FastAPI edge only: no models, no torch. Build context: the repository root.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir "numpy<2" fastapi uvicorn websockets pydantic-settings prometheus-client \
        webrtcvad-wheels av "tritonclient[grpc]" "PyJWT[crypto]"
COPY edge/ edge/
EXPOSE 8000
CMD ["python", "-m", "edge"]
