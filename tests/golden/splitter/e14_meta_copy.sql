\copy t from 'x.csv'
