# The MAP pipeline as a container: `mapshell` is the entry point.
FROM python:3.11-slim
WORKDIR /app
COPY setup.py README.md ./
COPY pipeline ./pipeline
COPY ingest ./ingest
COPY scripts ./scripts
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["mapshell"]
CMD ["--help"]
