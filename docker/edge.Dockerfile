# The FastAPI edge and the batch-job workers (`python -m jobs.worker`, docs/JOBS.md): one image,
# no models, no torch. Both use the shared core moderation/ (VAD, Triton pool, verdicts); the edge
# also serves the /v1/jobs API from jobs/, so all three packages go in. Build context: the
# repository root.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir "numpy<2" fastapi uvicorn websockets pydantic-settings prometheus-client \
        webrtcvad-wheels av "tritonclient[grpc]" "PyJWT[crypto]" \
        httpx "celery==5.7.0" redis sse-starlette python-multipart
COPY moderation/ moderation/
COPY edge/ edge/
COPY jobs/ jobs/
COPY console/ console/
EXPOSE 8000
CMD ["python", "-m", "edge"]
