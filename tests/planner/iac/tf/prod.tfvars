env        = "prod"
visibility = 45
