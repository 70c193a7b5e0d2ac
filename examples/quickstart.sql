-- Riffle quickstart: generate a million order lines, write them as Parquet, and report
-- revenue per region from the files. Everything runs in this process; no server needed.

CREATE TABLE generated_orders (
    order_id BIGINT,
    region_id INT,
    quantity INT,
    unit_price DOUBLE,
    discount DOUBLE
) WITH (
    'connector' = 'datagen',
    'number-of-rows' = '1000000',
    'fields.region_id.kind' = 'random',
    'fields.region_id.min' = '1',
    'fields.region_id.max' = '5',
    'fields.quantity.kind' = 'random',
    'fields.quantity.min' = '1',
    'fields.quantity.max' = '50',
    'fields.unit_price.min' = '1',
    'fields.unit_price.max' = '100',
    'fields.discount.max' = '0.1'
);

CREATE TABLE orders (
    order_id BIGINT,
    region_id INT,
    quantity INT,
    unit_price DOUBLE,
    discount DOUBLE
) WITH (
    'connector' = 'filesystem',
    'path' = '/tmp/riffle-quickstart/orders',
    'format' = 'parquet'
);

INSERT OVERWRITE orders SELECT * FROM generated_orders;

SELECT region_id,
       count(*) AS lines,
       sum(quantity) AS units,
       round(sum(quantity * unit_price * (1 - discount)), 2) AS revenue
FROM orders
WHERE quantity >= 10
GROUP BY region_id
ORDER BY revenue DESC;
