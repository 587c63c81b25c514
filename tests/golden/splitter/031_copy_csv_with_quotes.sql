CREATE TABLE t (a int, b text);
COPY t FROM STDIN WITH (FORMAT csv);
1,"a;b"
2,'quote
\.
SELECT 1;
