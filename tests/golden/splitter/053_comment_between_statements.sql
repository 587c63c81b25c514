SELECT 1; /* one */ -- two
/* three */ SELECT 2 /* inside; */;
