SELECT E'it\'s;';
SELECT e'back\\';
SELECT 2;
