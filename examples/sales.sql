CREATE SCHEMA IF NOT EXISTS sales;
CREATE TABLE sales.daily (
    point_of_sale text NOT NULL,
    product text NOT NULL,
    day date NOT NULL,
    sold integer,
    revenue numeric(12, 2),
    PRIMARY KEY (point_of_sale, product, day)
);
