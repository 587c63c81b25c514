SELECT U&'d\0061t\+000061;';
SELECT u&'x''y;';
